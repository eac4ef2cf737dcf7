"""Make an asv virtualenv see the launching venv's packages (torch, the third-party libraries)
without installing them: writes ``_lossoracle_deps.pth`` into the env's site-packages, one line per
directory of ``$LOSSORACLE_ASV_DEPS`` (``os.pathsep``-separated; ``benchmarks/gate.py`` sets it
to its own venv's site-packages). Plain path lines: the launching venv's own ``.pth`` files (an
editable install of lossoracle among them) are not processed, so the commit's wheel is what imports.

    python benchmarks/asv_env.py ENV_DIR      # asv.conf.json's install_command runs it
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def main(env_dir: str) -> None:
    deps = os.environ.get("LOSSORACLE_ASV_DEPS")
    if not deps:
        sys.exit("asv_env.py: set LOSSORACLE_ASV_DEPS to the site-packages holding torch "
                 "(benchmarks/gate.py does), or use asv run --python=same")
    python = next(p for p in (Path(env_dir) / "bin" / "python", Path(env_dir) / "Scripts" / "python.exe")
                  if p.exists())
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "_lossoracle_deps.pth").write_text("".join(f"{d}\n" for d in deps.split(os.pathsep) if d))


if __name__ == "__main__":
    main(sys.argv[1])
