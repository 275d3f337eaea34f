#!/usr/bin/env python3
"""Logs in to Berth's web UI through single sign-on in a real browser (Debian's chromium
through Playwright) for tests/oidc.rs: Berth's login page, its "Log in with ..." button, the
OpenID provider's authorization page (oidc-provider-mock: the user is picked by its `sub`), and
back to Berth, logged in.

Usage: browser.py, with the environment:
  BERTH_URL    base URL of a running berth (http://127.0.0.1:PORT)
  SUB          the provider's user to log in as
  EXPECT_NAME  the account name Berth must show once logged in
  SHOTS        folder for screenshots
  TOKEN_NAME   (optional) create a personal access token of this name (scope push) and print
               TOKEN=<secret> and TOKEN_EXPIRES=<its expiry as the settings page shows it>
Every check that fails raises (exit status 1) with a message; the last line is `OK`.
"""
import os

from playwright.sync_api import sync_playwright

BASE = os.environ["BERTH_URL"]
SUB = os.environ["SUB"]
EXPECT = os.environ["EXPECT_NAME"]
SHOTS = os.environ["SHOTS"]


def check(cond, message):
    if not cond:
        raise AssertionError(message)


def main():
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(BASE + "/login?next=/settings")
        button = page.locator("#sso-login")
        check(button.count() == 1, f"no single sign-on button on the login page: {page.content()}")
        check(button.inner_text().strip() == "Log in with Test IdP", f"the button says {button.inner_text()!r}")
        page.screenshot(path=os.path.join(SHOTS, "login-sso.png"), full_page=True)
        button.click()
        # The provider's page: pick the user.
        page.wait_for_selector("input[name=sub]")
        check(not page.url.startswith(BASE), f"still on Berth: {page.url}")
        page.fill("input[name=sub]", SUB)
        page.click("button[type=submit]:has-text('Authorize')")
        page.wait_for_url(BASE + "/settings")
        me = page.locator("header .me").inner_text().strip()
        check(me == EXPECT, f"logged in as {me!r}, not {EXPECT!r}")
        origin = page.locator("#origin").get_attribute("data-origin")
        check(origin == "oidc", f"the settings page says the account logs in by {origin!r}")
        check(page.locator("form[action='/settings/password']").count() == 0, "a password form for an SSO account")
        if os.environ.get("TOKEN_NAME"):
            page.fill("#new-token input[name=name]", os.environ["TOKEN_NAME"])
            page.select_option("#new-token select[name=scope]", "push")
            page.click("#new-token button[type=submit]")
            page.wait_for_load_state()
            token = page.locator("#secret-value").inner_text().strip()
            check(token.startswith("berth_"), f"no token shown: {page.locator('body').inner_text()}")
            print("TOKEN=" + token)
            row = page.locator("#tokens tbody tr", has_text=os.environ["TOKEN_NAME"])
            print("TOKEN_EXPIRES=" + row.locator("td").nth(4).inner_text().strip())
        page.screenshot(path=os.path.join(SHOTS, "settings-sso.png"), full_page=True)
        check(not errors, f"script errors: {errors}")
        browser.close()
    print("OK")


if __name__ == "__main__":
    main()
