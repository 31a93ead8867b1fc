"""Loads Patron's status page in headless Chromium (driven by Playwright) and
prints what a person would read off it as one JSON object; saves a screenshot.

Waits until the page has refreshed at least twice (so the live events/s is a
measured rate) and its tables are filled, then reads the numbers back from the
DOM. Fails (exit 1, reason on stderr) if that does not happen within 60 s.

usage: status_page.py URL SCREENSHOT.png [TOKEN]
  TOKEN is sent as HTTP Basic credentials (any user name), as a browser does
  after its sign-in prompt.
env: PATRON_CHROMIUM overrides the browser (default /usr/bin/chromium);
     PATRON_PAGE_WAIT_FITTED=1 also waits until the page says the models are fitted.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

# As root, in a sandbox without internet: no setuid sandbox, no GPU, and none
# of Chromium's background connections to Google's hosts.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def number(text):
    return float(text.replace(",", "")) if text and text not in ("–", "-") else None


def main():
    url, screenshot = sys.argv[1], sys.argv[2]
    token = sys.argv[3] if len(sys.argv) > 3 else None
    browser_path = os.environ.get("PATRON_CHROMIUM", "/usr/bin/chromium")
    wait_fitted = os.environ.get("PATRON_PAGE_WAIT_FITTED") == "1"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=FLAGS, headless=True)
        context_options = {"viewport": {"width": 1280, "height": 900}}
        if token:
            context_options["http_credentials"] = {"username": "analyst", "password": token}
        context = browser.new_context(**context_options)
        page = context.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            response = page.goto(url, wait_until="domcontentloaded")
        except Exception as e:  # noqa: BLE001 - a refusal is a result here
            # Headless Chromium cannot show its sign-in prompt: a Basic
            # challenge without credentials ends the navigation with this error.
            print(json.dumps({"status": None, "navigation_error": str(e).splitlines()[0]}))
            browser.close()
            return
        status = response.status if response else None
        if status != 200:
            print(json.dumps({"status": status}))
            browser.close()
            return
        try:
            # Two refreshes give a rate; the tables fill on the first.
            page.wait_for_function(
                """() => document.getElementById('events-per-second').textContent !== '–'
                      && document.querySelectorAll('#freshest tr').length > 0
                      && document.querySelectorAll('#segments .track').length > 0
                      && document.querySelectorAll('#params tr').length > 0
                      && document.querySelectorAll('#clv-histogram div').length > 0
                      && (!%s || document.getElementById('model-status').textContent === 'fitted')""" % ("true" if wait_fitted else "false"),
                timeout=60_000,
            )
        except Exception as e:  # noqa: BLE001 - report what the page shows
            page.screenshot(path=screenshot, full_page=True)
            error_text = page.locator("#error").inner_text()
            print(f"the page did not fill in: {e}; page error box: {error_text!r}; script errors: {errors}", file=sys.stderr)
            sys.exit(1)
        page.screenshot(path=screenshot, full_page=True)
        text = lambda selector: page.locator(selector).inner_text()  # noqa: E731
        result = {
            "status": status,
            "events_per_second": number(text("#events-per-second")),
            "events_accepted": number(text("#events-accepted")),
            "customers": number(text("#customers")),
            "products": number(text("#products")),
            "health": text("#health"),
            "models": text("#model-status"),
            "segments": page.locator("#segments .track").count(),
            "tiers": page.locator("#tiers .track").count(),
            "histogram_bins": page.locator("#clv-histogram div").count(),
            "clv_summary": text("#clv-summary"),
            "fitted_models": page.locator("#params tr").count(),
            "freshest_rows": page.locator("#freshest tr").count(),
            "try_lines": text("#try-lines"),
            "error_box_visible": page.locator("#error").is_visible(),
            "script_errors": errors,
        }
        print(json.dumps(result))
        browser.close()


if __name__ == "__main__":
    main()
