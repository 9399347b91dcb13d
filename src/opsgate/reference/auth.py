"""Who is calling: per-tenant API tokens, the service account, and admin sessions (cookie or bearer)."""

from __future__ import annotations

import hmac
import secrets
from typing import Any

import psycopg
from starlette.requests import Request

from opsgate.reference.db import token_digest
from opsgate.reference.errors import ApiError

SESSION_COOKIE = "session_id"
SESSION_TTL_S = 12 * 3600


def bearer(request: Request) -> str | None:
    """The bearer token of the Authorization header, if any."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def password_matches(expected: str, given: str) -> bool:
    """Constant-time password comparison."""
    return hmac.compare_digest(expected.encode(), given.encode())


async def create_session(conn: psycopg.AsyncConnection[Any], username: str) -> str:
    """Create an admin session and return its token (stored hashed)."""
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO sessions (token_sha256, username, expires_at) VALUES (%s, %s, now() + make_interval(secs => %s))",
        (token_digest(token), username, SESSION_TTL_S),
    )
    return token


async def delete_session(conn: psycopg.AsyncConnection[Any], token: str) -> None:
    """End a session."""
    await conn.execute("DELETE FROM sessions WHERE token_sha256 = %s", (token_digest(token),))


async def session_user(conn: psycopg.AsyncConnection[Any], request: Request) -> str | None:
    """The admin user of the request's session (cookie or bearer), or None."""
    token = request.cookies.get(SESSION_COOKIE) or bearer(request)
    if not token:
        return None
    cur = await conn.execute(
        "SELECT username FROM sessions WHERE token_sha256 = %s AND expires_at > now()", (token_digest(token),)
    )
    row = await cur.fetchone()
    return str(row[0]) if row else None


async def require_admin(conn: psycopg.AsyncConnection[Any], request: Request) -> str:
    """The admin user, or a 401 ``UNAUTHORIZED``."""
    user = await session_user(conn, request)
    if user is None:
        raise ApiError(401, "UNAUTHORIZED", "admin session required: POST /auth/login")
    return user


async def require_tenant(conn: psycopg.AsyncConnection[Any], request: Request, tenant_id: str | None) -> str:
    """The tenant owning the bearer token; 401 without a valid token, 403 for another tenant's data."""
    token = bearer(request)
    if not token:
        raise ApiError(401, "UNAUTHORIZED", "tenant API token required (Authorization: Bearer ...)")
    cur = await conn.execute("SELECT id::text FROM tenants WHERE api_token_sha256 = %s", (token_digest(token),))
    row = await cur.fetchone()
    if row is None:
        raise ApiError(401, "UNAUTHORIZED", "unknown API token")
    if tenant_id is not None and row[0] != tenant_id:
        raise ApiError(403, "FORBIDDEN", "the token belongs to another tenant")
    return str(row[0])
