"""The server-rendered admin page (no JavaScript): tenants, sending state, queue depths, kill switch."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}
.paused{color:#b00}.active{color:#070}form{display:inline}
"""


@dataclass(frozen=True)
class TenantRow:
    """One tenant as the admin page shows it."""

    id: str
    name: str
    status: str
    paused: bool

    @property
    def sending_state(self) -> str:
        """``suspended``, ``paused`` or ``sending``."""
        if self.status == "suspended":
            return "suspended"
        return "paused" if self.paused else "sending"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def render_login(error: str | None, action: str = "/admin/login") -> str:
    """The service-account login form, posting to ``action``."""
    message = f"<p role='alert' data-testid='login-error'>{escape(error)}</p>" if error else ""
    return _page(
        "opsgate reference admin: log in",
        "<h1>Admin login</h1>" + message + f"<form method='post' action='{escape(action)}'>"
        "<label>Username <input name='username' autocomplete='username'></label> "
        "<label>Password <input name='password' type='password' autocomplete='current-password'></label> "
        "<button type='submit'>Log in</button></form>",
    )


def render_home(tenants: list[TenantRow], queue_counts: dict[str, dict[str, int]], maintenance: bool) -> str:
    """Settings → Kill Switch: each tenant's sending state with its Pause/Resume Sending control."""
    rows = []
    for t in tenants:
        action, label = ("resume", "Resume Sending") if t.paused else ("pause", "Pause Sending")
        rows.append(
            f"<tr data-tenant-id='{escape(t.id)}'><td>{escape(t.name)}</td><td><code>{escape(t.id)}</code></td>"
            f"<td class='{escape(t.sending_state)}' data-testid='sending-state-{escape(t.id)}'>"
            f"{escape(t.sending_state)}</td>"
            f"<td><form method='post' action='/admin/tenants/{escape(t.id)}/{action}'>"
            f"<button type='submit' data-testid='kill-switch-{escape(t.id)}'>{label}</button></form></td></tr>"
        )
    queues = []
    for name, counts in queue_counts.items():
        cells = "".join(
            f"<td data-testid='queue-{escape(name)}-{state}'>{counts.get(state, '?')}</td>"
            for state in ("waiting", "active", "delayed", "failed")
        )
        queues.append(f"<tr><td>{escape(name)}</td>{cells}</tr>")
    return _page(
        "opsgate reference admin",
        "<h1>Admin</h1>"
        "<form method='post' action='/admin/logout'><button type='submit' data-testid='logout'>Log out</button></form>"
        f"<p>Maintenance mode: <strong data-testid='maintenance'>{'on' if maintenance else 'off'}</strong></p>"
        "<h2>Settings → Kill Switch</h2>"
        "<table><thead><tr><th>Tenant</th><th>Id</th><th>Sending</th><th>Kill switch</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        "<h2>Queues</h2><table><thead><tr><th>Queue</th><th>Waiting</th><th>Active</th><th>Delayed</th>"
        f"<th>Failed</th></tr></thead><tbody>{''.join(queues)}</tbody></table>",
    )
