"""Save a PNG of the first screen of a report as it renders in headless Chromium.

    python benchmarks/screenshot_report.py [--report reports/multi-prompt-eval/report.html]
        [--output docs/images/report-first-screen.png] [--width 1280] [--height 800]

The page is checked while it loads: the script exits with status 1, and
writes no screenshot, when the page logs a console error or an image does
not decode. It exits with status 2 when no Chromium or Chrome is found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robustscope.report.browser import BrowserError, HeadlessChromium, find_chromium

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "multi-prompt-eval" / "report.html", help="HTML report to open")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "images" / "report-first-screen.png", help="PNG file to write")
    parser.add_argument("--width", type=int, default=1280, help="viewport width in CSS pixels (default: 1280)")
    parser.add_argument("--height", type=int, default=800, help="viewport height in CSS pixels (default: 800)")
    args = parser.parse_args(argv)

    if not args.report.is_file():
        print(f"report not found: {args.report}; run `make report` first", file=sys.stderr)
        return 1
    if find_chromium() is None:
        print("no Chromium or Chrome found: install the chromium package or set ROBUSTSCOPE_CHROMIUM", file=sys.stderr)
        return 2

    try:
        with HeadlessChromium(width=args.width, height=args.height) as browser:
            check = browser.open(args.report)
            if check.errors or check.broken_images:
                for error in check.errors:
                    print(f"page error: {error}", file=sys.stderr)
                for image in check.broken_images:
                    print(f"image {image['index']} did not load: {image['alt']}", file=sys.stderr)
                return 1
            image = browser.screenshot()
    except BrowserError as error:
        print(f"Chromium failed: {error}", file=sys.stderr)
        return 1

    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(image)
    print(f"{args.report}: loaded in {check.load_seconds:.2f} s, {len(check.images)} images, no errors; wrote {args.output} ({args.width}x{args.height})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
