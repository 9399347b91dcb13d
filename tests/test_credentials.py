"""Tests of opsgate.credentials through ``Target.secret_values``: every secret field of a target file is found."""

from __future__ import annotations

import base64

import pytest

from opsgate.config import parse_target
from opsgate.credentials import command_secrets, is_credential_name, is_secret_variable

# One target with a secret in every kind of field; each value is distinct, so each finding rule is needed.
TARGET = """\
name: every-secret-field
environment: staging
secrets: [LISTED]
services:
  api:
    url: "http://ops:${BASIC_USERINFO}@api.internal:8000"
    control:
      kind: command
      read: "kubectl --token='${KUBE_TOKEN_VALUE}' get deploy/worker -o jsonpath={.spec.replicas}"
      stop: "PGPASSWORD=${ASSIGNED} kubectl --server https://admin:${KUBE_USERINFO}@k8s.internal scale --replicas=0 w"
      start: >-
        curl -u ops:${CURL_USERPASS} -H "Authorization: Bearer ${CURL_BEARER}" https://ctl.internal/start
        && ctl --api-key ${SPACED_FLAG} ${CTL_SESSION_TOKEN} start
datastores:
  postgres: {dsn: "postgresql://opsgate:${PG_USERINFO}@db.internal:5432/opsgate?sslmode=require"}
  redis: {url: "redis://:${REDIS_USERINFO}@cache.internal:6379/0"}
metrics:
  scrape: ["https://scraper:${SCRAPE_USERINFO}@api.internal/metrics"]
  prometheus: "https://prom.internal/?access_token=${QUERY_PARAM}"
auth: {tenant_id: t-1, api_token: "${AUTH_FIELD}", service_user: ops-bot, service_password: "${AUTH_LOGIN}"}
flows:
  - name: login-and-send
    steps:
      - {method: POST, path: /auth/login, json: {username: ops-bot, password: "${BODY_FIELD}"}, save: {token: token}}
      - method: POST
        path: /v1/messages
        headers:
          Authorization: "Bearer {token}"
          X-Api-Key: "${HEADER_KEY}"
          Cookie: "theme=dark; session=${COOKIE_SESSION}"
        sign: {header: x-sandbox-signature, secret: "${SIGN_VALUE}"}
gates:
  - name: quota
    http: {service: api, path: /quota, field: ratio, headers: {Authorization: "Basic ${BASIC_HEADER}"}}
    op: "<"
    threshold: 0.8
drills:
  - name: provider-down
    fault: {provider: {error_rate: 1.0}, provider_control: "http://ctl:${CONTROL_USERINFO}@provider.internal/control/faults"}
    expect_during:
      - health: {service: api, path: /readyz, headers: {X-Auth-Token: "${PROBE_HEADER}"}, expect: {status: 503}}
"""

ENVIRON = {
    "LISTED": "listed-value-1",
    "BASIC_USERINFO": "basic%2Fpw%20x",
    "KUBE_TOKEN_VALUE": "kube-token-2",
    "ASSIGNED": "assigned-pw-3",
    "KUBE_USERINFO": "kube-url-pw-4",
    "CURL_USERPASS": "curl-pw-5",
    "CURL_BEARER": "curl-bearer-6",
    "SPACED_FLAG": "spaced-flag-7",
    "CTL_SESSION_TOKEN": "named-variable-8",
    "PG_USERINFO": "pg-pw-9",
    "REDIS_USERINFO": "redis-pw-10",
    "SCRAPE_USERINFO": "scrape-pw-11",
    "QUERY_PARAM": "query-token-12",
    "AUTH_FIELD": "auth-token-13",
    "AUTH_LOGIN": "auth-pw-14",
    "BODY_FIELD": "body-pw-15",
    "HEADER_KEY": "header-key-16",
    "COOKIE_SESSION": "cookie-session-17",
    "SIGN_VALUE": "sign-secret-18",
    "BASIC_HEADER": base64.b64encode(b"reader:basic-header-pw-19").decode(),
    "CONTROL_USERINFO": "control-pw-20",
    "PROBE_HEADER": "probe-token-21",
}


@pytest.fixture(scope="module")
def secrets() -> frozenset[str]:
    return parse_target(TARGET, source="t.yaml", environ=ENVIRON).secret_values


@pytest.mark.parametrize("variable", sorted(ENVIRON))
def test_every_secret_field_is_found(secrets: frozenset[str], variable: str) -> None:
    assert ENVIRON[variable] in secrets


def test_each_field_is_found_by_its_own_rule() -> None:
    # Only one variable is named like a secret: every other value above is found by the field it is in.
    assert [name for name in ENVIRON if is_secret_variable(name)] == ["CTL_SESSION_TOKEN"]


def test_the_secret_inside_a_field_is_found_too(secrets: frozenset[str]) -> None:
    assert "basic/pw x" in secrets  # a URL password, percent-decoded
    assert {"reader:basic-header-pw-19", "basic-header-pw-19"} <= secrets  # inside a Basic header
    assert "Bearer curl-bearer-6" not in secrets  # the token stands for the header: "Bearer t" is no secret


def test_what_is_not_a_secret_is_left_out(secrets: frozenset[str]) -> None:
    for public in ("ops-bot", "token", "{token}", "Bearer {token}", "t-1", "dark", "admin", "ops", "0.8", "w"):
        assert public not in secrets
    assert not any("internal" in value and "://" not in value for value in secrets)


def test_variables_named_like_secrets_count_wherever_they_are_used() -> None:
    text = "name: n\nenvironment: staging\nservices:\n  api: {url: 'http://h', health: [{path: '/${PATH_TOKEN}'}]}\n"
    target = parse_target(text, environ={"PATH_TOKEN": "named-in-a-path"})
    assert "named-in-a-path" in target.secret_values
    fallback = parse_target(text.replace("${PATH_TOKEN}", "${PATH_TOKEN:-fallback-token}"), environ={})
    assert "fallback-token" in fallback.secret_values


@pytest.mark.parametrize(
    "name, secret",
    [("API_TOKEN", True), ("KUBE_TOKEN", True), ("PGPASSWORD", True), ("PROVIDER_API_KEY", True),
     ("BILLING_WEBHOOK_SECRET", True), ("SERVICE_PASSWORD", True), ("DB_PASS", True), ("TOKEN_TTL", False),
     ("REDIS_KEY_PREFIX", False), ("BYPASS", False), ("SERVICE_USER", False), ("API_URL", False)],
)  # fmt: skip
def test_secret_variable_names(name: str, secret: bool) -> None:
    assert is_secret_variable(name) is secret


@pytest.mark.parametrize(
    "name, credential",
    [("Authorization", True), ("x-api-key", True), ("X-Auth-Token", True), ("secret", True), ("api_token", True),
     ("#password", True), ("Cookie", True), ("secrets", False), ("redis_key", False), ("tenant_id", False),
     ("x-sandbox-signature", False), ("service_user", False)],
)  # fmt: skip
def test_credential_names(name: str, credential: bool) -> None:
    assert is_credential_name(name) is credential


def test_command_tokens_as_the_shell_writes_them() -> None:
    found = command_secrets("""deploy --password "pa ss\\"word" --token=a'b'c X_SECRET='q w' run --verbose""")
    assert {'pa ss"word', 'pa ss\\"word', "abc", "q w"} <= found  # the value, and its double-quoted spelling
    assert "run" not in found and "--verbose" not in found
