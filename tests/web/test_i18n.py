"""Every string of the portal is translated: the English and Chinese catalogs have the same keys and
placeholders, no Chinese message is left in English, every key the code uses exists in both, and no
template carries visible English text of its own. (The browser test then checks the rendered pages:
tests/web/test_pages.py.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.api.server import ROOT
from tests.web.conftest import catalogs

JS = ROOT / "src" / "kvmkit" / "web" / "static" / "js"
PLACEHOLDER = re.compile(r"\{(\w+)\}")
CJK = re.compile(r"[\u3400-\u9fff\uff00-\uffef\u3000-\u303f]")
# the same in every language: language names (each in its own script), pure formats, key names
SAME_EVERYWHERE = {"lang.en", "lang.zh-CN", "unit.bytes", "vms.action_on", "vnc.button.ctrl_alt_del"}
KEYLIKE = re.compile(r"""(["'`])([a-z][a-z0-9_-]*(?:\.[A-Za-z0-9_-]+)+)\1(\s*\+)?""")
DYNAMIC = re.compile(r"""\b(?:t|has)\(\s*(?:(["'])([a-z0-9_.-]+\.)\1\s*\+|`([a-z0-9_.-]+[._])\$\{)""")
# words that are names in every language and may appear as literal text in templates
TECHNICAL = {"kvmkit", "qcow2", "raw", "virtio", "sata", "scsi", "e1000e", "rtl8139", "JavaScript", "XML", "UUID"}


def js_files() -> list[Path]:
    """The portal's modules, and the graphical console's (static/vnc-*.js) when it is installed."""
    return sorted([*JS.rglob("*.js"), *JS.parent.glob("vnc-*.js")])


@pytest.mark.fast
def test_catalogs_have_the_same_keys_and_placeholders():
    cats = catalogs()
    en, zh = cats["en"], cats["zh-CN"]
    assert sorted(set(en) - set(zh)) == [], "keys missing in zh-CN.json"
    assert sorted(set(zh) - set(en)) == [], "keys missing in en.json"
    bad = [k for k in en if set(PLACEHOLDER.findall(en[k])) != set(PLACEHOLDER.findall(zh[k]))]
    assert bad == [], f"placeholders differ between the languages: {bad}"
    empty = [k for lang, cat in cats.items() for k, v in cat.items() if not v.strip()]
    assert empty == [], f"empty messages: {empty}"


@pytest.mark.fast
def test_no_chinese_message_is_left_in_english():
    cats = catalogs()
    en, zh = cats["en"], cats["zh-CN"]
    same = [k for k in en if en[k] == zh[k] and k not in SAME_EVERYWHERE]
    assert same == [], f"zh-CN.json repeats the English text of: {same}"
    latin_only = [k for k, v in zh.items() if k not in SAME_EVERYWHERE and re.search(r"[A-Za-z]{3,}", v)
                  and not CJK.search(PLACEHOLDER.sub("", v))]
    assert latin_only == [], f"zh-CN.json messages without Chinese text: {latin_only}"


def used_keys() -> tuple[dict[str, str], set[str]]:
    """(key -> first file using it, dynamic key prefixes) over the portal's modules."""
    namespaces = {k.split(".")[0] for k in catalogs()["en"]}
    keys: dict[str, str] = {}
    prefixes: set[str] = set()
    for f in js_files():
        text = f.read_text()
        for m in KEYLIKE.finditer(text):
            key, concatenated = m.group(2), m.group(3)
            if key.split(".")[0] in namespaces and not concatenated and not key.endswith("."):
                keys.setdefault(key, f.name)
        for m in DYNAMIC.finditer(text):
            prefixes.add(m.group(2) or m.group(3))
    return keys, prefixes


@pytest.mark.fast
def test_every_key_the_code_uses_is_in_both_catalogs():
    cats = catalogs()
    keys, prefixes = used_keys()
    assert len(keys) > 300, "the key scan found too little: did the code's key syntax change?"
    for lang, cat in cats.items():
        missing = sorted(f"{k} ({f})" for k, f in keys.items() if k not in cat)
        assert missing == [], f"{lang}: keys used in the code but missing: {missing}"
        for prefix in prefixes:
            assert any(k.startswith(prefix) for k in cat), f"{lang}: nothing under the dynamic prefix {prefix!r}"


def html_templates(src: str) -> list[str]:
    """The static text of every html`...` template in ``src`` (nested ones too), each expression replaced
    by NUL: a small scanner of JS strings, comments, template literals and ${...} expressions."""
    out: list[str] = []
    n = len(src)

    def skip_string(i: int) -> int:
        quote = src[i]
        i += 1
        while i < n and src[i] != quote:
            i += 2 if src[i] == "\\" else 1
        return i + 1

    def template(i: int, tagged: bool) -> int:  # i: just after the opening backtick
        parts: list[str] = []
        while i < n:
            c = src[i]
            if c == "\\":
                parts.append(src[i:i + 2])
                i += 2
            elif c == "`":
                if tagged:
                    out.append("".join(parts))
                return i + 1
            elif c == "$" and src[i + 1:i + 2] == "{":
                parts.append("\x00")
                i = code(i + 2, stop_at_brace=True)
            else:
                parts.append(c)
                i += 1
        return i

    def code(i: int, stop_at_brace: bool) -> int:
        depth = 0
        while i < n:
            c = src[i]
            if c in "\"'":
                i = skip_string(i)
            elif src.startswith("//", i):
                i = src.find("\n", i)
                i = n if i < 0 else i
            elif src.startswith("/*", i):
                i = src.find("*/", i) + 2
            elif c == "`":
                i = template(i + 1, src[max(0, i - 4):i] == "html")
            elif c == "{":
                depth += 1
                i += 1
            elif c == "}":
                if stop_at_brace and depth == 0:
                    return i + 1
                depth -= 1
                i += 1
            else:
                i += 1
        return i

    code(0, stop_at_brace=False)
    return out


@pytest.mark.fast
def test_template_scanner_sees_nested_text():
    src = 'const a = html`<p>${x ? html`<b>Nested words</b>` : "y"} ${t("k")}</p>`; // html`<i>no</i>`'
    assert html_templates(src) == ["<b>Nested words</b>", "<p>\x00 \x00</p>"]


@pytest.mark.fast
def test_templates_hold_no_text_of_their_own():
    """Visible text comes from t(): a word between two tags of an html`` template is a string nobody
    translated."""
    between = re.compile(r">([^<>]*)<")
    found = []
    for f in js_files():
        for chunk in html_templates(f.read_text()):
            for m in between.finditer(chunk):
                words = [w for w in re.findall(r"[A-Za-z][A-Za-z0-9'-]+", m.group(1).replace("\x00", " "))
                         if w not in TECHNICAL]
                if words:
                    found.append(f"{f.name}: {m.group(1).strip()[:60]!r}")
    assert len(found) == 0, "untranslated text in templates:\n" + "\n".join(found)


@pytest.mark.fast
def test_api_error_patterns_name_existing_keys():
    """The English error sentences the portal translates (lib/errors.js) point at keys of both catalogs."""
    text = (JS / "lib" / "errors.js").read_text()
    keys = set(re.findall(r'"((?:err|hint|word)\.[a-z0-9_]+)"', text))
    assert len(keys) > 30
    for lang, cat in catalogs().items():
        assert sorted(keys - set(cat)) == [], lang
