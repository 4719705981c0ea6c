"""Creating apps from an uploaded config (issue 9: the app limit through every creation
path), page and API, against a real tenant daemon (development mode).

The fixtures are test_apps.py's: tenant `acme`, its daemon started by the fixture (the
panel never starts one: NoAutostart), a logged-in user `ann` with every right.
"""

# ruff: noqa: F811  (test_apps' fixtures are imported and used as parameters)
from __future__ import annotations

import json
import re
from html import unescape
from typing import Any

import httpx
import pytest

from tests.panel.test_apps import (  # noqa: F401
    SLEEPER,
    Site,
    SiteFactory,
    error_of,
    make_site,
    site,
    tenant_corral,
)
from tests.support.panel import ORIGIN

IMPORT = "/t/acme/apps/import"
API = "/api/v1/tenants/acme/apps/import"


def yaml_of(*apps: dict[str, Any]) -> str:
    lines = ["apps:"]
    for app in apps:
        first = True
        for key, value in app.items():
            lines.append(f"  {'- ' if first else '  '}{key}: {json.dumps(value)}")
            first = False
    return "\n".join(lines) + "\n"


def two_apps() -> str:
    return yaml_of(
        {"name": "web", "script": "app/server.py", "instances": 2},
        {"name": "worker", "script": "app/server.py", "env": {"MODE": "jobs"}},
    )


def upload(
    site: Site, content: bytes | str, filename: str = "corral.yaml", **fields: str
) -> httpx.Response:
    """The import form with a file chosen (multipart), as the browser sends it."""
    data = {"csrf_token": site.csrf, "text": "", "format": "auto", **fields}
    body = content.encode() if isinstance(content, str) else content
    response: httpx.Response = site.client.post(
        IMPORT,
        data=data,
        files={"file": (filename, body, "application/octet-stream")},
        headers={"Origin": ORIGIN},
        follow_redirects=False,
    )
    return response


def problems_of(html: str) -> list[str]:
    """The config problems listed above the text field."""
    block = re.search(r'<ul class="config-errors" id="e-config">(.*?)</ul>', html, re.S)
    if not block:
        return []
    return [
        unescape(re.sub(r"<[^>]+>", "", li).strip())
        for li in re.findall(r"<li[^>]*>(.*?)</li>", block[1], re.S)
    ]


# --- the page ---------------------------------------------------------------------------


def test_the_new_app_page_links_to_the_import(site: Site) -> None:
    assert f'href="{IMPORT}"' in site.client.get("/t/acme/apps/new").text
    page = site.client.get(IMPORT)
    assert page.status_code == 200
    assert 'enctype="multipart/form-data"' in page.text
    assert '<input id="f-file" name="file" type="file"' in page.text
    assert "<script>" not in page.text and "style=" not in page.text  # strict CSP


def test_an_uploaded_yaml_file_creates_and_starts_every_app(site: Site) -> None:
    response = upload(site, two_apps())
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/t/acme"
    apps = site.apps()
    assert sorted(apps) == ["web", "worker"]
    assert [r["status"] for r in apps["web"]] == ["online", "online"]
    assert site.config_of("worker")["env"] == {"MODE": "jobs"}
    assert site.config_of("web")["script"] == str(site.home / "app" / "server.py")
    script = site.home / "app" / "server.py"
    assert site.audit("app.create") == [
        ("app.create", "web", "ok", f"script {script} (imported)"),
        ("app.create", "worker", "ok", f"script {script} (imported)"),
    ]
    assert "Imported and started 2 apps: web, worker." in site.client.get("/t/acme").text


def test_pasted_text_and_each_format_of_the_api(site: Site) -> None:
    pasted = site.post(IMPORT, {"text": yaml_of({"name": "a", "script": "app/server.py"})})
    assert pasted.status_code == 303, pasted.text
    as_json = json.dumps({"apps": [{"name": "b", "script": "app/server.py"}]})
    toml = '[[apps]]\nname = "c"\nscript = "app/server.py"\n'
    procfile = "# comment\nd: app/server.py\n\ne: app/server.py --port 9000\n"
    for fmt, text, names in (
        ("json", as_json, ["b"]),
        ("toml", toml, ["c"]),
        ("procfile", procfile, ["d", "e"]),
    ):
        response = site.api("POST", API, {"text": text, "format": fmt})
        assert response.status_code == 201, (fmt, response.text)
        body = response.json()
        assert body["created"] == names
        assert [a["app"]["name"] for a in body["apps"]] == names
        assert all(a["app"]["status"] in ("online", "launching") for a in body["apps"])
    assert sorted(site.apps()) == ["a", "b", "c", "d", "e"]
    assert site.config_of("e")["args"] == ["--port", "9000"]
    # the file's name says the format
    assert (
        upload(site, procfile.replace("d:", "f:").replace("e:", "g:"), "Procfile").status_code
        == 303
    )
    assert {"f", "g"} <= set(site.apps())


# --- bad input: messages next to the field, nothing started ------------------------------


def test_mistakes_are_shown_next_to_their_field(site: Site) -> None:
    nothing = site.post(IMPORT, {"text": "  "})
    assert nothing.status_code == 422
    assert "paste a config" in (error_of(nothing.text, "text") or "")

    both = upload(site, two_apps(), text=two_apps())
    assert both.status_code == 422
    assert "not both" in (error_of(both.text, "file") or "")

    unknown = upload(site, two_apps(), "apps.txt")
    assert unknown.status_code == 422
    assert "choose it" in (error_of(unknown.text, "format") or "")

    binary = upload(site, b"apps:\n  - name: \xff\xfe\n")
    assert binary.status_code == 422
    assert "not UTF-8" in (error_of(binary.text, "file") or "")

    broken = site.post(IMPORT, {"text": "apps:\n  - name: web\n    script: [unclosed\n"})
    assert broken.status_code == 422
    [problem] = problems_of(broken.text)
    assert "invalid YAML" in problem and "line" in problem
    assert "apps:\n  - name: web\n    script: [unclosed\n</textarea>" in broken.text  # kept

    bad_key = site.post(
        IMPORT,
        {
            "text": "apps:\n  - name: ok\n    script: app/server.py\n"
            "  - name: bad\n    script: app/server.py\n    instances: zero\n"
        },
    )
    assert bad_key.status_code == 422
    [problem] = problems_of(bad_key.text)
    assert problem.startswith("apps[1].instances") and "line 6" in problem and "'bad'" in problem

    api = site.api("POST", API, {"text": "apps: []", "format": "yaml"})
    assert api.status_code == 422 and set(api.json()["errors"]) == {"config"}
    assert site.api("POST", API, {"format": "yaml"}).json()["errors"] == {
        "text": "required: the config text"
    }
    wrong = site.api("POST", API, {"text": two_apps(), "format": "ini"})
    assert wrong.status_code == 422 and set(wrong.json()["errors"]) == {"format"}
    dup = site.api("POST", API, {"text": two_apps().replace("worker", "web"), "format": "yaml"})
    assert dup.status_code == 422 and "duplicate" in dup.json()["errors"]["config"]
    assert site.apps() == {}
    assert {e[2] for e in site.audit("app.create")} == {"failed"}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("script", "../outside.py"),
        ("script", "app/../../outside.py"),
        ("script", "/etc/passwd"),
        ("script", "app/link.py"),  # a symlink pointing out of the home
        ("cwd", ".."),
        ("cwd", "/tmp"),
        ("cwd", "linkdir"),  # a symlinked folder pointing out
        ("out_file", "../stolen.log"),
        ("error_file", "/tmp/stolen.log"),
        ("out_file", "linkdir/stolen.log"),
        ("log_file", "../stolen.log"),
        ("user", "root"),
    ],
)
def test_a_path_leaving_the_home_refuses_the_whole_upload(site: Site, key: str, value: str) -> None:
    outside = site.home.parent / "outside.py"
    outside.write_text(SLEEPER)
    (site.home / "app" / "link.py").symlink_to(outside)
    (site.home / "linkdir").symlink_to(site.home.parent)
    good = {"name": "good", "script": "app/server.py"}
    bad = {"name": "bad", "script": "app/server.py", key: value}
    response = site.post(IMPORT, {"text": yaml_of(good, bad)})
    assert response.status_code == 422
    [problem] = problems_of(response.text)
    assert problem.startswith(f"apps[1].{key}"), problem
    api = site.api("POST", API, {"text": yaml_of(good, bad)})
    assert api.status_code == 422
    assert list(api.json()["errors"]) == [f"apps[1].{key}"]
    assert site.apps() == {}  # all or nothing: not even the good one
    assert not (site.home.parent / "stolen.log").exists()


def test_a_procfile_command_outside_the_home_is_refused(site: Site) -> None:
    (site.home.parent / "outside.py").write_text(SLEEPER)
    response = site.api(
        "POST", API, {"text": "web: app/server.py\nevil: ../outside.py\n", "format": "procfile"}
    )
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert list(errors) == ["apps[1].script"] and errors["apps[1].script"].startswith("line 2")
    assert site.apps() == {}


def test_names_that_exist_or_are_reserved_are_refused(site: Site) -> None:
    site.create("web")
    response = site.post(IMPORT, {"text": two_apps()})
    assert response.status_code == 422
    assert problems_of(response.text) == ["apps[0].name an app named 'web' already exists"]
    assert set(site.apps()) == {"web"}  # worker was not started either
    reserved = site.api(
        "POST", API, {"text": yaml_of({"name": "import", "script": "app/server.py"})}
    )
    assert reserved.status_code == 422 and "reserved" in reserved.json()["errors"]["apps[0].name"]
    assert set(site.apps()) == {"web"}
    failed = [(e[1], e[3]) for e in site.audit("app.create") if e[2] == "failed"]
    assert ("web", "an app of that name exists") in failed
    assert ("worker", "not started: another app of the same config exists") in failed


# --- the app limit, for every new app of the upload at once ------------------------------


def test_the_limit_counts_every_app_of_the_upload(make_site: SiteFactory) -> None:
    site = make_site(limit=3)
    site.create("one")
    site.create("two")
    response = upload(site, two_apps())
    assert response.status_code == 409
    assert "room for 1 more, not 2; nothing was started" in response.text
    api = site.api("POST", API, {"text": two_apps()})
    assert api.status_code == 409 and "room for 1 more" in api.json()["error"]
    assert sorted(site.apps()) == ["one", "two"]
    denied = [(e[1], e[2]) for e in site.audit("app.create") if e[2] != "ok"]
    assert denied == [("web", "denied"), ("worker", "denied")] * 2
    # one fits
    one = site.api("POST", API, {"text": yaml_of({"name": "three", "script": "app/server.py"})})
    assert one.status_code == 201, one.text
    full = site.api("POST", API, {"text": yaml_of({"name": "four", "script": "app/server.py"})})
    assert full.status_code == 409
    assert full.json()["error"] == "the app limit is reached: 3 of 3 apps; delete one first"
    assert sorted(site.apps()) == ["one", "three", "two"]


def test_a_limit_of_zero_refuses_any_upload(make_site: SiteFactory) -> None:
    site = make_site(limit=0)
    response = site.post(IMPORT, {"text": two_apps()})
    assert response.status_code == 409
    assert "may not run any app" in response.text
    assert site.apps() == {}


def test_manage_is_needed(make_site: SiteFactory) -> None:
    site = make_site(rights=("access", "control", "logs"))
    assert site.client.get(IMPORT).status_code == 403
    assert site.post(IMPORT, {"text": two_apps()}).status_code == 403
    assert site.api("POST", API, {"text": two_apps()}).status_code == 403
    assert site.apps() == {}
