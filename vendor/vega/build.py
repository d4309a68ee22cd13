"""Rebuild dvc_plots.html, the offline `dvc plots show` template, from the npm registry.

    python vendor/vega/build.py [--vega 5.33.1] [--vega-lite 5.23.0] [--vega-embed 6.29.0]

Needs `npm` (only this script does; the committed template is all `dvc plots show` needs).
Installs the three packages into a temporary folder, inlines their browser bundles
(build/*.min.js, byte for byte) into the template, and writes beside it the licence of each
package (LICENSE.<package>) and THIRD_PARTY_LICENSES.txt: the licences of the packages the
bundles are built from (vega.min.js bundles d3 and friends). Commit everything it writes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUNDLES = {name: f"{name}.min.js" for name in ("vega", "vega-lite", "vega-embed")}
# runtime dependencies that no browser bundle contains (command-line tools, Node I/O, typings)
NOT_BUNDLED = {"yargs", "node-fetch", "commander", "iconv-lite", "rw", "vega-typings"}
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")  # DVC fills these in the template

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Offline template for `dvc plots show` (.dvc/config: plots.html_template). DVC's
         default page loads Vega from a CDN and is blank without internet; this one inlines
         %(versions)s
         (BSD-3-Clause: see vendor/vega/LICENSE.* and THIRD_PARTY_LICENSES.txt).
         Rebuilt by vendor/vega/build.py; do not edit by hand. -->
%(scripts)s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def _install(folder: Path, versions: dict[str, str]) -> dict:
    specs = [f"{name}@{version}" for name, version in versions.items()]
    subprocess.run(["npm", "init", "-y"], cwd=folder, check=True, capture_output=True)
    subprocess.run(["npm", "install", "--omit=dev", "--ignore-scripts", "--no-audit",
                    "--no-fund", *specs], cwd=folder, check=True)  # fmt: skip
    return json.loads((folder / "package-lock.json").read_text())["packages"]


def _licence_file(pkg: Path) -> Path | None:
    names = sorted(p for p in pkg.iterdir() if p.name.lower().startswith(("licen", "copying")))
    return names[0] if names else None


def _bundled(lock: dict, roots: list[str]) -> list[str]:
    """The packages reachable from `roots` through runtime dependencies, minus NOT_BUNDLED."""
    seen: list[str] = []
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in NOT_BUNDLED or name.startswith("@types/"):
            continue
        seen.append(name)
        todo.extend(lock.get(f"node_modules/{name}", {}).get("dependencies", {}))
    return sorted(seen)


def _third_party(modules: Path, lock: dict, names: list[str], vega_licence: str) -> str:
    groups: dict[str, list[str]] = {}
    for name in names:
        meta = lock[f"node_modules/{name}"]
        found = _licence_file(modules / name)
        if found is not None:
            text = found.read_text(encoding="utf8").strip()
        elif name.startswith("vega") and meta.get("license") == "BSD-3-Clause":
            text = vega_licence  # the vega monorepo's packages ship no LICENSE file of their own
        else:
            text = f"(no licence file in the package; package.json: {meta.get('license')})"
        groups.setdefault(text, []).append(f"{name}@{meta['version']} ({meta.get('license')})")
    parts = ["Licences of the npm packages inlined into dvc_plots.html (the browser bundles of",
             "vega, vega-lite and vega-embed and the runtime dependencies they are built from).",
             ""]  # fmt: skip
    for text, pkgs in groups.items():
        parts += ["=" * 78, *pkgs, "-" * 78, text, ""]
    return "\n".join(parts)


def build(versions: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        lock = _install(Path(tmp), versions)
        modules = Path(tmp) / "node_modules"
        scripts, summary = [], []
        for name, bundle in BUNDLES.items():
            version = lock[f"node_modules/{name}"]["version"]
            code = (modules / name / "build" / bundle).read_text(encoding="utf8")
            bad = [p for p in (*PLACEHOLDERS, "</script") if p in code]
            if bad:
                raise SystemExit(f"{name} {version} contains {bad}: it cannot be inlined as is")
            sha = hashlib.sha256(code.encode()).hexdigest()
            summary.append(f"{name}@{version} build/{bundle} sha256 {sha}")
            scripts.append(f"    <!-- {name} {version}: build/{bundle} -->\n"
                           f"    <script>{code}</script>")  # fmt: skip
        vega_licence = (modules / "vega-view" / "LICENSE").read_text(encoding="utf8").strip()
        for name in BUNDLES:
            found = _licence_file(modules / name)
            text = found.read_text(encoding="utf8").strip() if found else vega_licence
            (HERE / f"LICENSE.{name}").write_text(text + "\n", encoding="utf8")
        names = _bundled(lock, list(BUNDLES))
        notices = _third_party(modules, lock, names, vega_licence)
        (HERE / "THIRD_PARTY_LICENSES.txt").write_text(notices, encoding="utf8")
        page = PAGE % {"versions": ", ".join(s.split(" ")[0] for s in summary),
                       "scripts": "\n".join(scripts)}  # fmt: skip
        (HERE / "dvc_plots.html").write_text(page, encoding="utf8")
        (HERE / "VERSIONS.txt").write_text("\n".join(summary) + "\n", encoding="utf8")
        print("\n".join(summary))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vega", default="5.33.1")
    parser.add_argument("--vega-lite", default="5.23.0")
    parser.add_argument("--vega-embed", default="6.29.0")
    args = parser.parse_args()
    build({"vega": args.vega, "vega-lite": args.vega_lite, "vega-embed": args.vega_embed})


if __name__ == "__main__":
    main()
