"""What a browser would submit from a rendered admin page: the controls of one <form> with their
rendered values, as the HTML form-submission rules pick them.

Used by the admin tests to GET a page and POST back exactly what it showed, so a form whose rendered
values do not round-trip (a Python repr, a primary key where a name is expected) fails the test the
way it fails an operator.
"""

from __future__ import annotations

from html.parser import HTMLParser

# Inputs whose value is never submitted from a plain "press Save" (the clicked button is added by the test).
_NOT_SUBMITTED = frozenset({"submit", "button", "image", "reset", "file"})
_SINGLE_LINE = frozenset({"text", "search", "tel", "password", "url", "email"})


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[tuple[dict[str, str | None], list[tuple[str, str]], list[tuple[str, str]]]] = []
        self._form: list[tuple[str, str]] | None = None
        self._buttons: list[tuple[str, str]] = []  # the enabled submit buttons: name, value
        self._select: tuple[str, bool, list[tuple[str, bool]]] | None = None  # name, multiple, options
        self._option: list[str] | None = None  # value attribute (or None: the text) and text
        self._option_attrs: dict[str, str | None] = {}
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self._form, self._buttons = [], []
            self.forms.append((a, self._form, self._buttons))
            return
        if self._form is None:
            return
        name, disabled = a.get("name"), "disabled" in a
        kind = (a.get("type") or ("submit" if tag == "button" else "text")).lower()
        if tag in ("input", "button") and kind == "submit":
            if name and not disabled:
                self._buttons.append((name, a.get("value") or ""))
            return
        if tag == "input" and name and not disabled:
            if kind in _NOT_SUBMITTED:
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._form.append((name, a.get("value") or "on"))
                return
            value = a.get("value") or ""
            if kind in _SINGLE_LINE:
                # A browser drops line breaks from these inputs' values (and trims urls and emails).
                value = value.replace("\r", "").replace("\n", "")
                value = value.strip() if kind in ("url", "email") else value
            self._form.append((name, value))
        elif tag == "select":
            self._select = (name or "", "multiple" in a, []) if name and not disabled else None
        elif tag == "option" and self._select is not None:
            self._option, self._option_attrs = [], a
        elif tag == "textarea":
            self._textarea = (name, []) if name and not disabled else None

    def _close_option(self) -> None:
        if self._option is not None and self._select is not None:
            value = self._option_attrs.get("value")
            text = "".join(self._option).strip()
            selected = "selected" in self._option_attrs and "disabled" not in self._option_attrs
            self._select[2].append((text if value is None else value, selected))
        self._option = None

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "option":
            self._close_option()
        elif tag == "select" and self._select is not None and self._form is not None:
            self._close_option()
            name, multiple, options = self._select
            chosen = [value for value, selected in options if selected]
            if not chosen and not multiple and options:
                chosen = [options[0][0]]  # a single select always submits something: its first option
            self._form.extend((name, value) for value in (chosen if multiple else chosen[-1:]))
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            name, parts = self._textarea
            text = "".join(parts)
            # The parser drops one newline right after <textarea>, and a submission sends line breaks as CRLF.
            text = text[1:] if text.startswith("\n") else text
            self._form.append((name, text.replace("\r\n", "\n").replace("\n", "\r\n")))
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option.append(data)
        elif self._textarea is not None:
            self._textarea[1].append(data)


def form_data_from(
    html: str | bytes, *, form_id: str | None = None, action: str | None = None, press: str | None = None
) -> dict[str, list[str]]:
    """The name → values a browser submits from one form of the page: the one with id `form_id` or
    action `action` (by default the form with the most controls, so an admin page's header logout form
    is passed over; with `press`, the first such form having that button). Disabled controls and
    unchecked boxes are left out, as a browser leaves them out; `press` names the value of the submit
    button clicked, whose name and value are sent with the rest (it must be there and enabled)."""
    parser = _FormParser()
    parser.feed(html.decode() if isinstance(html, bytes) else html)
    parser.close()
    forms = [
        (fields, buttons)
        for attrs, fields, buttons in parser.forms
        if (form_id is None or attrs.get("id") == form_id) and (action is None or attrs.get("action") == action)
    ]
    if press is not None:
        forms = [(fields, [b for b in buttons if b[1] == press]) for fields, buttons in forms]
        forms = [(fields, buttons) for fields, buttons in forms if buttons]
    if not forms:
        raise AssertionError(
            f"no form {form_id or action or ''} {'with an enabled ' + press if press else ''} on the page"
        )
    fields, buttons = forms[0] if press is not None else max(forms, key=lambda form: len(form[0]))
    data: dict[str, list[str]] = {}
    for name, value in [*fields, *buttons[:1]] if press is not None else fields:
        data.setdefault(name, []).append(value)
    return data
