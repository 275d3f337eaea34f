#!/usr/bin/env python3
"""Drives Berth's web UI in a real browser (Debian's chromium through Playwright) for tests/ui.rs.

Usage: browser.py PHASE, with the environment:
  BERTH_URL       base URL of a running berth (http://127.0.0.1:PORT)
  BERTH_HOST      the registry host as docker names it (127.0.0.1:PORT)
  ADMIN_PASSWORD  the password of the account `admin`
  REPO            the repository the test pushed (tags 1.0 and old)
  SHOTS           folder for screenshots
  NEW_USER, NEW_PASSWORD   (phase "admin") the account to create

Phases:
  browse  log in, find REPO in the list, check its tags, its layers/history and config (the
          `<script>` label must render as text), create a personal access token; prints
          HISTORY=<json> and TOKEN=<secret>.
  admin   delete the tag `old` through the confirmation page, create NEW_USER as admin, then
          log in as NEW_USER and check REPO is neither listed nor reachable by URL.
Every check that fails raises (exit status 1) with a message; the last line is `OK PHASE`.
"""
import json
import os
import sys

from playwright.sync_api import sync_playwright

BASE = os.environ["BERTH_URL"]
HOST = os.environ["BERTH_HOST"]
ADMIN_PASSWORD = os.environ["ADMIN_PASSWORD"]
REPO = os.environ["REPO"]
SHOTS = os.environ["SHOTS"]
XSS = "<script>alert(1)</script>"
XSS_ENV = "XSS_PROBE=<img src=x onerror=alert(2)>"


def check(cond, message):
    if not cond:
        raise AssertionError(message)


class Session:
    """One browser context (its own cookies) that fails on any dialog or page error."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.dialogs = []
        self.errors = []
        # Confirmation dialogs (data-confirm) are accepted only when a step expects them.
        self.accept_dialogs = False
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _dialog(self, dialog):
        if self.accept_dialogs:
            dialog.accept()
            return
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path):
        return self.page.goto(BASE + path)

    def login(self, name, password):
        self.goto("/login")
        self.page.fill("input[name=name]", name)
        self.page.fill("input[name=password]", password)
        self.page.click("button[type=submit]")
        self.page.wait_for_load_state()
        check(self.page.locator("header .me").inner_text() == name, f"not logged in as {name}: {self.page.url}")

    def shot(self, name):
        self.page.screenshot(path=os.path.join(SHOTS, name), full_page=True)

    def text(self):
        return self.page.locator("body").inner_text()

    def no_injection(self, where):
        check(not self.dialogs, f"a dialog fired on {where}: {self.dialogs}")
        check(not self.errors, f"script errors on {where}: {self.errors}")
        scripts = self.page.eval_on_selector_all("script", "els => els.map(e => e.src)")
        check(scripts == [BASE + "/static/berth.js"], f"unexpected script elements on {where}: {scripts}")
        check(self.page.locator("main img").count() == 0, f"an injected <img> on {where}")


def browse(browser):
    s = Session(browser)
    s.login("admin", ADMIN_PASSWORD)
    # The list: find the pushed repository through the search box.
    short = REPO.split("/")[-1]
    s.page.fill("input[name=q]", short)
    s.page.click("form.search button[type=submit]")
    s.page.wait_for_load_state()
    link = s.page.locator(f"table.list a.repo[href='/r/{REPO}']")
    check(link.count() == 1, f"{REPO} not found by searching {short!r}: {s.text()}")
    row = s.page.locator("table.list tbody tr", has=s.page.locator(f"a.repo[href='/r/{REPO}']"))
    cells = row.locator("td").all_inner_texts()
    check(cells[1].strip() == "3", f"tag count of {REPO} is not 3: {cells}")
    check("B" in cells[3], f"no size for {REPO}: {cells}")
    s.goto("/")
    s.shot("list.png")

    # The repository: its tags and the pull line.
    s.goto(f"/r/{REPO}")
    tags = s.page.locator("#tags tbody tr").evaluate_all("rows => rows.map(r => r.dataset.tag)")
    check(tags == ["1.0", "multi", "old"], f"tags of {REPO}: {tags}")
    multi = s.page.locator("#tags tr[data-tag='multi']").inner_text()
    check("index" in multi and "linux/amd64" in multi, f"the index row shows no platforms: {multi}")
    pull = s.page.locator("#pull-cmd").inner_text()
    check(pull.startswith(f"docker pull {HOST}/{REPO}:"), f"pull line: {pull}")
    check(s.page.locator("button.copy").first.is_visible(), "no copy button")
    s.shot("repository.png")
    s.page.set_viewport_size({"width": 390, "height": 844})
    s.shot("repository-phone.png")
    s.page.set_viewport_size({"width": 1280, "height": 900})

    # The tag: config, layers beside their history lines.
    s.page.click("#tags a.tag >> text=1.0")
    s.page.wait_for_load_state()
    check(s.page.url.endswith(f"/r/{REPO}/-/manifest/1.0"), f"tag page url {s.page.url}")
    body = s.text()
    for want in ["application/vnd.docker.distribution.manifest.v2+json", "/app", "8080/tcp", '["sh"]', XSS]:
        check(want in body, f"{want!r} not on the tag page")
    label = s.page.locator("#labels dd.label-value").inner_text()
    check(label == XSS, f"the label renders as {label!r}, not as text")
    check(XSS_ENV in s.page.locator("#config").inner_text(), "the XSS_PROBE env var is not shown as text")
    check(s.page.locator("#labels script").count() == 0, "a script element inside the labels")
    rows = s.page.locator("#layers tbody tr").evaluate_all(
        "rows => rows.map(r => ({by: r.cells[1].querySelector('code').textContent,"
        " layer: r.cells[2].innerText.trim(), size: r.cells[3].innerText.trim()}))"
    )
    check(len(rows) >= 3, f"too few history rows: {rows}")
    copy = [r for r in rows if "COPY" in r["by"]]
    check(len(copy) == 1 and copy[0]["layer"] != "—" and copy[0]["size"] != "0 B", f"the COPY line has no layer: {rows}")
    label_rows = [r for r in rows if "LABEL" in r["by"]]
    check(len(label_rows) == 1 and label_rows[0]["layer"] == "—", f"the LABEL line should have no layer: {rows}")
    s.no_injection("the tag page")
    s.shot("tag.png")
    s.page.emulate_media(color_scheme="dark")
    s.shot("tag-dark.png")
    s.page.emulate_media(color_scheme="light")
    referrers = s.page.locator("#referrers").inner_text()
    check("application/vnd.example.sbom+json" in referrers, f"the referrer is not listed: {referrers}")

    # The index: its platforms link to the image.
    s.goto(f"/r/{REPO}/-/manifest/multi")
    check("application/vnd.oci.image.index.v1+json" in s.text(), "the index's media type")
    s.page.click("#platforms a >> text=linux/amd64")
    s.page.wait_for_load_state()
    check("/-/manifest/sha256:" in s.page.url and s.page.locator("#layers").count() == 1, f"platform link: {s.page.url}")
    s.shot("index-entry.png")
    print("HISTORY=" + json.dumps([r["by"] for r in rows]))

    # Settings: a personal access token, shown once.
    s.goto("/settings")
    s.page.fill("#new-token input[name=name]", "docker-login")
    s.page.select_option("#new-token select[name=scope]", "pull")
    s.page.click("#new-token button[type=submit]")
    s.page.wait_for_load_state()
    token = s.page.locator("#secret-value").inner_text().strip()
    check(token.startswith("berth_"), f"no token shown: {s.text()}")
    check("docker-login" in s.page.locator("#tokens").inner_text(), "the new token is not listed")
    s.shot("settings.png")
    s.goto("/settings")
    check(token not in s.page.content(), "the token secret is shown a second time")
    print("TOKEN=" + token)


def admin(browser):
    new_user, new_password = os.environ["NEW_USER"], os.environ["NEW_PASSWORD"]
    s = Session(browser)
    s.login("admin", ADMIN_PASSWORD)
    # Delete the tag `old`: the Delete link leads to a confirmation page.
    s.goto(f"/r/{REPO}")
    s.page.locator("#tags tr[data-tag='old'] a.danger").click()
    s.page.wait_for_load_state()
    check("/-/delete?reference=old" in s.page.url, f"no confirmation page: {s.page.url}")
    s.shot("confirm-delete.png")
    s.page.click("#confirm-delete")
    s.page.wait_for_load_state()
    check("Deleted." in s.text(), f"no confirmation of the delete: {s.text()}")
    tags = s.page.locator("#tags tbody tr").evaluate_all("rows => rows.map(r => r.dataset.tag)")
    check(tags == ["1.0", "multi"], f"tags after deleting old: {tags}")

    # Create a user as admin.
    s.goto("/admin")
    s.page.fill("#new-user input[name=name]", new_user)
    s.page.fill("#new-user input[name=password]", new_password)
    s.page.click("#new-user button[type=submit]")
    s.page.wait_for_load_state()
    check(s.page.locator(f"#users tr[data-user='{new_user}']").count() == 1, f"{new_user} not in the users table")
    s.shot("admin.png")

    # An organisation: create it, add the new user as reader, make it public, add a robot.
    s.page.fill("form[action='/admin/orgs'] input[name=name]", "uiorg")
    s.page.click("form[action='/admin/orgs'] button[type=submit]")
    s.page.wait_for_load_state()
    s.page.click("#orgs a >> text=uiorg")
    s.page.wait_for_load_state()
    s.page.fill("form[action='/ns/uiorg/members'] input[name=account]", new_user)
    s.page.select_option("form[action='/ns/uiorg/members'] select[name=role]", "reader")
    s.page.click("form[action='/ns/uiorg/members'] button[type=submit]")
    s.page.wait_for_load_state()
    members = s.page.locator("#members").inner_text()
    check(new_user in members and "reader" in members, f"members: {members}")
    s.accept_dialogs = True
    s.page.click("form[action='/ns/uiorg/visibility'] button")
    s.page.wait_for_load_state()
    s.accept_dialogs = False
    check("public" in s.page.locator("#visibility").inner_text(), "uiorg did not become public")
    s.page.fill("form[action='/robots'] input[name=name]", "ci")
    s.page.select_option("form[action='/robots'] select[name=role]", "writer")
    s.page.click("form[action='/robots'] button[type=submit]")
    s.page.wait_for_load_state()
    check("uiorg+ci" in s.text(), "the robot is not listed")
    s.page.fill("form[action='/robots/uiorg+ci/tokens'] input[name=name]", "pipeline")
    s.page.click("form[action='/robots/uiorg+ci/tokens'] button[type=submit]")
    s.page.wait_for_load_state()
    robot_token = s.page.locator("#secret-value").inner_text().strip()
    check(robot_token.startswith("berth_"), "no robot token shown")
    s.shot("namespace.png")
    print("ROBOT_TOKEN=" + robot_token)

    # The new user cannot see the private repository: not listed, not by URL.
    u = Session(browser)
    u.login(new_user, new_password)
    check(REPO not in u.text(), f"{new_user} sees {REPO} in the list")
    check(u.page.locator(f"a[href='/r/{REPO}']").count() == 0, f"{new_user} has a link to {REPO}")
    u.shot("list-other-user.png")
    for path in [f"/r/{REPO}", f"/r/{REPO}/-/manifest/1.0", f"/r/{REPO}/-/delete?reference=1.0"]:
        resp = u.goto(path)
        check(resp.status == 404, f"{new_user} gets {resp.status} for {path}")
        check("does not exist or you may not see it" in u.text(), f"{path} shows: {u.text()}")
        check(XSS not in u.text(), f"{path} leaks the config")
    # Their own settings page works; there is no admin page for them.
    u.goto("/settings")
    check(new_user in u.text(), "the new user's settings page")
    resp = u.goto("/admin")
    check(resp.status == 403, f"{new_user} gets {resp.status} for /admin")


def main():
    phase = sys.argv[1]
    os.makedirs(SHOTS, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=["--no-sandbox"])
        try:
            {"browse": browse, "admin": admin}[phase](browser)
        finally:
            browser.close()
    print(f"OK {phase}")


if __name__ == "__main__":
    main()
