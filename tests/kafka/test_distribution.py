"""What a machine without Java or Maven is told (the local Apache Kafka's prerequisites)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bus.kafka.distribution import java_binary, kafka_jars
from bus.kafka.exceptions import LocalKafkaError


def test_no_java_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk-here"))
    with pytest.raises(LocalKafkaError, match=r"Java 17 or newer.*openjdk-17.*JAVA_HOME.*bus up --demo"):
        java_binary()


def test_an_old_java_is_refused_with_its_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java = tmp_path / "jdk" / "bin" / "java"
    java.parent.mkdir(parents=True)
    java.write_text('#!/bin/sh\necho \'openjdk version "11.0.2" 2019-01-15\' >&2\n')
    java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    with pytest.raises(LocalKafkaError, match=r"needs Java 17 or newer; .* is Java 11"):
        java_binary()


def test_jars_missing_without_maven_say_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"  # a PATH with no mvn on it
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    home = tmp_path / "kafka-home"
    with pytest.raises(LocalKafkaError, match=r"needs Maven: install it .*BUS_KAFKA_HOME"):
        kafka_jars(home)
    assert not (home / "complete").exists() and not (home / "libs").exists()


def test_jars_already_cached_are_used_without_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "kafka-home"
    (home / "libs").mkdir(parents=True)
    (home / "complete").write_text("4.4.0\n")
    monkeypatch.setenv("PATH", os.devnull)
    assert kafka_jars(home) == home / "libs"
