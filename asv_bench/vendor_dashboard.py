"""Make a published asv dashboard work offline (and on machines that block third-party scripts).

asv's ``index.html`` loads jQuery, flot, bootstrap and friends from public CDNs, so on a machine without internet
it shows "Can not determine continental origin of swallow" instead of graphs. This script fetches the same
versions once with ``npm pack`` (cached), copies them into ``html/vendor/`` and points ``index.html`` at them
(dropping the CDN's integrity hashes, which the registry's builds do not match).

    asv publish && python vendor_dashboard.py            # then: asv preview, or deploy html/ to Pages
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = Path.home() / ".cache" / "pykernels-asv-vendor"

# file name asv's index.html asks for -> (npm package@version, file inside that package)
VENDORED = {
    "jquery-3.3.1.min.js": ("jquery@3.3.1", "dist/jquery.min.js"),
    "jquery.flot.min.js": ("flot@0.8.3", "jquery.flot.js"),
    "jquery.flot.time.min.js": ("flot@0.8.3", "jquery.flot.time.js"),
    "jquery.flot.selection.min.js": ("flot@0.8.3", "jquery.flot.selection.js"),
    "jquery.flot.categories.min.js": ("flot@0.8.3", "jquery.flot.categories.js"),
    "jquery.flot.orderBars.js": ("flot-orderbars@1.0.0", "js/jquery.flot.orderBars.js"),
    "stupidtable.min.js": ("stupid-table-plugin@1.1.3", "stupidtable.min.js"),
    "md5.min.js": ("blueimp-md5@2.19.0", "js/md5.min.js"),
    "bootstrap.min.js": ("bootstrap@3.1.1", "dist/js/bootstrap.min.js"),
    "bootstrap.min.css": ("bootstrap@3.1.1", "dist/css/bootstrap.min.css"),
}
_TAG = re.compile(r"<(?:script|link)\b[^>]*>")
_REMOTE = re.compile(r'(src|href)="https://[^"]*/([^/"]+)"')
# The CDN tags carry subresource-integrity hashes of the CDN's builds; the registry's files differ byte for byte
# (flot's plugins are not minified there), so the hashes go with the CDN address.
_INTEGRITY = re.compile(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"')


def _package(spec: str) -> Path:
    """The unpacked npm package (fetched once into the cache)."""
    target = CACHE / spec.replace("/", "_")
    if not target.exists():
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(
                ["npm", "pack", spec, "--silent", "--pack-destination", scratch],
                check=True,
                capture_output=True,
                timeout=300,
            )
            (archive,) = Path(scratch).glob("*.tgz")
            with tarfile.open(archive) as tar:
                tar.extractall(scratch, filter="data")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(Path(scratch) / "package", target)
    return target


def vendor(html_dir: Path) -> list[str]:
    """Copy the dependencies into html_dir/vendor and rewrite index.html; returns the rewritten file names."""
    index = html_dir / "index.html"
    text = index.read_text()
    (html_dir / "vendor").mkdir(exist_ok=True)
    rewritten = []

    def local(match: re.Match) -> str:
        attribute, name = match.groups()
        if name not in VENDORED:
            return match.group(0)
        spec, path = VENDORED[name]
        shutil.copy(_package(spec) / path, html_dir / "vendor" / name)
        rewritten.append(name)
        return f'{attribute}="vendor/{name}"'

    def local_tag(match: re.Match) -> str:
        tag = match.group(0)
        rewritten_tag = _REMOTE.sub(local, tag)
        return tag if rewritten_tag == tag else _INTEGRITY.sub("", rewritten_tag)

    index.write_text(_TAG.sub(local_tag, text))
    return rewritten


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", nargs="?", type=Path, default=HERE / "html")
    args = parser.parse_args()
    print("vendored:", ", ".join(vendor(args.html_dir)))


if __name__ == "__main__":
    main()
