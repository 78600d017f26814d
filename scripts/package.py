"""`make package`: build satseg_plugin.zip for QGIS's "Install from ZIP" (caches and bytecode left out)."""

import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(target: str) -> int:
    """Zip ``satseg_plugin/`` into ``target``; return the number of files."""
    count = 0
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirs, files in os.walk(os.path.join(ROOT, "satseg_plugin")):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if name.endswith((".pyc", ".pyo")):
                    continue
                path = os.path.join(dirpath, name)
                archive.write(path, os.path.relpath(path, ROOT))
                count += 1
    return count


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "satseg_plugin.zip")
    print(f"Wrote {out} ({build(out)} files). In QGIS: Plugins > Manage and Install Plugins > Install from ZIP.")
