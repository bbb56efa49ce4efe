"""The one place client configuration is built: profiles, and nothing leaks between them."""

from __future__ import annotations

import pytest

from bus.kafka.config import (
    KafkaSettings,
    consumer_config,
    faust_settings,
    producer_config,
    registry_client_config,
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BUS_BOOTSTRAP_SERVERS", "BUS_KAFKA_PROFILE", "BUS_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)


def test_unset_bootstrap_means_embedded_profile() -> None:
    settings = KafkaSettings()
    assert settings.embedded
    assert settings.bootstrap_servers == "127.0.0.1:9092"


def test_bootstrap_from_environment_means_cluster_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = KafkaSettings()
    assert not settings.embedded
    conf = producer_config(settings, client_id="p")
    # A real cluster keeps Kafka's own batching: the embedded workarounds never apply.
    assert "batch.num.messages" not in conf and "linger.ms" not in conf
    assert "session.timeout.ms" not in consumer_config(settings, group_id="g", client_id="c")
    assert "producer_max_batch_size" not in faust_settings(settings)


def test_embedded_profile_applies_single_record_batches_and_short_sessions() -> None:
    settings = KafkaSettings()
    producer = producer_config(settings, client_id="p")
    assert producer["batch.num.messages"] == 1 and producer["linger.ms"] == 0
    assert consumer_config(settings, group_id="g", client_id="c")["session.timeout.ms"] == 6000
    faust = faust_settings(settings)
    assert "producer_max_batch_size" not in faust and faust["broker_session_timeout"] == 6.0
    assert faust_settings(settings.with_exact_watermarks(True))["producer_max_batch_size"] == 1


@pytest.mark.parametrize(
    ("exact", "exact_data", "data_path", "single_record"),
    [
        (True, False, False, True),  # the bus's state: tables, connector state, the registry
        (True, False, True, False),  # the data path (published, routed): batched by default
        (True, True, True, True),  # the data path exact too, when asked
        (False, True, False, False),  # benchmarks of raw throughput: nothing exact
        (False, True, True, False),
    ],
)
def test_the_embedded_data_path_is_batched_unless_asked(
    exact: bool, exact_data: bool, data_path: bool, single_record: bool
) -> None:
    settings = KafkaSettings(exact_watermarks=exact, exact_data_watermarks=exact_data)
    conf = producer_config(settings, client_id="p", data_path=data_path)
    assert ("batch.num.messages" in conf) is single_record
    assert (conf.get("linger.ms") == 0) is single_record
    assert conf["enable.idempotence"] is True and conf["acks"] == "all"


def test_benchmarks_batch_everything_or_nothing_and_say_which() -> None:
    """`bus up` on the embedded broker: the state single-record, the data path batched. A
    benchmark's --exact-watermarks makes both single-record, for baseline and bus alike."""
    assert KafkaSettings().single_record_batches == "state"
    exact = KafkaSettings().with_exact_watermarks(True)
    assert exact.single_record_batches == "all"
    assert "batch.num.messages" in producer_config(exact, client_id="p", data_path=True)
    batched = KafkaSettings().with_exact_watermarks(False)
    assert batched.single_record_batches == "none"
    assert "batch.num.messages" not in producer_config(batched, client_id="p")
    assert KafkaSettings(kafka_profile="cluster").with_exact_watermarks(True).single_record_batches == "none"


@pytest.mark.parametrize("profile", ["embedded", "cluster"])
def test_producer_is_idempotent_with_acks_all(profile: str) -> None:
    settings = KafkaSettings(kafka_profile=profile)
    conf = producer_config(settings, client_id="p", transactional_id="tx-1")
    assert conf["enable.idempotence"] is True
    assert conf["acks"] == "all"
    assert conf["transactional.id"] == "tx-1"


def test_consumers_commit_explicitly_and_read_committed() -> None:
    conf = consumer_config(KafkaSettings(), group_id="g", client_id="c")
    assert conf["enable.auto.commit"] is False
    assert conf["isolation.level"] == "read_committed"


def test_faust_broker_url_lists_every_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_BOOTSTRAP_SERVERS", "a:1, b:2")
    assert faust_settings(KafkaSettings())["broker"] == "kafka://a:1;kafka://b:2"


def test_secrets_are_secret_until_the_client_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_SASL_PASSWORD", "hunter2-city")
    monkeypatch.setenv("BUS_SASL_USERNAME", "bus")
    monkeypatch.setenv("BUS_SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("BUS_SECURITY_PROTOCOL", "SASL_SSL")
    settings = KafkaSettings()
    assert "hunter2-city" not in repr(settings)
    assert producer_config(settings, client_id="p")["sasl.password"] == "hunter2-city"


def test_registry_basic_auth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_REGISTRY_URL", "https://registry.city.local")
    monkeypatch.setenv("BUS_REGISTRY_USERNAME", "bus")
    monkeypatch.setenv("BUS_REGISTRY_PASSWORD", "pw")
    conf = registry_client_config(KafkaSettings())
    assert conf["url"] == "https://registry.city.local"
    assert conf["basic.auth.user.info"] == "bus:pw"


def test_bad_profile_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BUS_KAFKA_PROFILE", "sometimes")
    with pytest.raises(ValueError, match="kafka_profile"):
        KafkaSettings()
