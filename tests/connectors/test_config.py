"""Connector configs: what a mistake in a connector's `config` reads like, and secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.connect import ConnectorConfigInvalid, SecretRef, config_problems, describe_config, parse_config
from bus.connect.config import ConnectorConfig
from connectors.http_ingest import HttpIngestConfig
from connectors.webhook_sink import WebhookSinkConfig
from tests.connectors.support import entry_points

WEBHOOK = {"url": "https://dispatch.fire.example.gov.cn/bus/alarms", "hmac_key": "env:FIRE_HMAC_KEY"}
INGEST = {"auth": {"token": "env:SKYNET_TOKEN"}}

CASES = [
    ("unknown key", "http_webhook_sink", WEBHOOK | {"urll": "x"}, ("config", "urll"),
     "unknown key 'urll' (did you mean 'url'?); the keys allowed here are: errors.tolerance"),
    ("unknown nested key", "http_ingest", {"auth": {"tokn": "env:X"}}, ("config", "auth", "tokn"),
     "unknown key 'tokn' (did you mean 'token'?); the keys allowed here are: token, hmac_key, signature_header"),
    ("missing key", "http_webhook_sink", {"url": WEBHOOK["url"]}, ("config", "hmac_key"),
     "missing required key 'hmac_key': add `hmac_key: env:FIRE_DISPATCH_HMAC_KEY` (key of the HMAC-SHA256"),
    ("secret in clear", "http_webhook_sink", WEBHOOK | {"hmac_key": "s3cr3t-value"}, ("config", "hmac_key"),
     "hmac_key: a secret is never written in clear in topology.yaml; write env:NAME"),
    ("closed set", "http_webhook_sink", WEBHOOK | {"errors.tolerance": "some"}, ("config", "errors.tolerance"),
     "errors.tolerance: 'some' is not allowed; write one of: none, all"),
    ("wrong type", "http_webhook_sink", WEBHOOK | {"timeout_s": "ten"}, ("config", "timeout_s"),
     "timeout_s: input should be a valid number, got the text 'ten'; write e.g. `timeout_s: 10`"),
    ("no credential", "http_ingest", {"auth": {}}, ("config", "auth"),
     "auth: give the department a credential: `token: env:NAME`"),
    ("bad url", "http_webhook_sink", WEBHOOK | {"url": "dispatch.example"}, ("config", "url"), "url: string should match"),
    ("unknown type", "http_webhok_sink", {}, ("type",),
     "unknown connector type 'http_webhok_sink'; did you mean 'http_webhook_sink'?"),
]


@pytest.mark.parametrize(("case", "kind", "config", "loc", "message"), CASES, ids=[c[0] for c in CASES])
def test_config_problems_say_where_and_what_to_write(case: str, kind: str, config: dict, loc: tuple, message: str) -> None:
    problems = config_problems(kind, config, entry_points=entry_points())
    assert len(problems) == 1, problems
    assert problems[0][0] == loc
    assert problems[0][1].startswith(message), problems[0][1]


def test_valid_configs_have_no_problems_and_secrets_are_not_read_when_validating() -> None:
    assert config_problems("http_webhook_sink", WEBHOOK, entry_points=entry_points()) == []
    assert config_problems("http_ingest", INGEST, entry_points=entry_points()) == []


def test_a_missing_secret_is_a_clear_error_at_start_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIRE_HMAC_KEY", raising=False)
    with pytest.raises(ConnectorConfigInvalid) as info:
        parse_config(WebhookSinkConfig, "fire-dispatch-webhook", WEBHOOK)
    text = str(info.value)
    assert "connector 'fire-dispatch-webhook'" in text
    assert "hmac_key: secret env:FIRE_HMAC_KEY: the environment variable FIRE_HMAC_KEY is not set" in text
    problems = config_problems("http_webhook_sink", WEBHOOK, check_secrets=True, entry_points=entry_points())
    assert problems == [(("config", "hmac_key"), info.value.problems[0][1])]


def test_secrets_come_from_env_or_file_and_never_show(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-value\n")
    monkeypatch.setenv("SKYNET_HMAC", "env-secret-value")
    config = parse_config(HttpIngestConfig, "skynet", {"auth": {"token": f"file:{secret_file}",
                                                                 "hmac_key": "env:SKYNET_HMAC"}})
    assert isinstance(config, HttpIngestConfig)
    assert config.auth.token is not None and config.auth.hmac_key is not None
    assert config.auth.token.get_secret_value() == "file-secret-value"
    assert config.auth.hmac_key.get_secret_value() == "env-secret-value"
    shown = repr(config) + str(config) + config.model_dump_json(by_alias=True)
    assert "secret-value" not in shown
    assert "env:SKYNET_HMAC" in config.model_dump_json(by_alias=True)

    with pytest.raises(ConnectorConfigInvalid, match=r"no file .*missing; create it"):
        parse_config(HttpIngestConfig, "skynet", {"auth": {"token": f"file:{tmp_path / 'missing'}"}})


def test_a_secret_may_be_given_in_code_but_not_as_clear_text() -> None:
    from pydantic import SecretStr

    ref = SecretRef._validate(SecretStr("in-code"))
    assert ref.get_secret_value() == "in-code" and "in-code" not in repr(ref)


def test_the_error_settings_are_kafka_connects_with_the_bus_defaults() -> None:
    config = ConnectorConfig.model_validate({"errors.retry.timeout": -1, "errors.retry.delay.max.ms": 2000})
    assert config.errors_tolerance == "all"
    assert config.errors_deadletterqueue_context_headers_enable is True
    policy = config.retry_policy()
    assert policy.timeout_s is None and policy.backoff.max_s == 2.0


def test_help_is_generated_from_the_models() -> None:
    rows = {row.key: row for row in describe_config(HttpIngestConfig)}
    assert rows["auth"].required
    assert rows["auth.token"].type.startswith("secret")
    assert rows["auth.token"].examples == ["env:SKYNET_INGEST_TOKEN"]
    assert rows["errors.tolerance"].default == "all"
    assert "dead-letter" in rows["errors.tolerance"].description


def test_problems_land_on_the_lines_of_topology_yaml_as_bus_validate_shows_them(tmp_path: Path) -> None:
    from ruamel.yaml import YAML

    from bus.connect.registry import KIT_CHECKS
    from bus.topology.validate import validate_topology
    from tests.fixtures.city import write_city_topology

    path = write_city_topology(tmp_path, "validate_test")
    yaml = YAML()
    data = yaml.load(path.read_text())
    webhook = next(c for c in data["connectors"] if c["name"] == "fire-dispatch-webhook")
    webhook["config"] = {"url": "https://dispatch.fire.example.gov.cn/bus/alarms", "hmac_key": "plain-secret",
                         "retries": 3}
    ingest = next(c for c in data["connectors"] if c["name"] == "skynet-platform")
    del ingest["config"]["auth"]
    with path.open("w") as out:
        yaml.dump(data, out)
    lines = path.read_text().splitlines()
    found = [str(p) for p in validate_topology(path, KIT_CHECKS)]

    def at(text: str, after: str = "fire-dispatch-webhook") -> str:
        start = next(n for n, line in enumerate(lines) if after in line)
        number = next(n for n, line in enumerate(lines) if n > start and text in line) + 1
        return f"{path}:{number}:"

    assert any(p.startswith(at("retries:")) and "unknown key 'retries'" in p for p in found), found
    assert any(p.startswith(at("hmac_key:")) and "never written in clear" in p for p in found), found
    ingest_line = at("path: /ingest/skynet", "skynet-platform")
    assert any(p.startswith(ingest_line) and "missing required key 'auth'" in p for p in found), found
    assert not any("mqtt_source" in p for p in found)  # installed, and its config is valid
    assert len(found) == 3, found
