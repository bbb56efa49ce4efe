"""Apache Kafka's distribution for the local broker: its jars, fetched from Maven Central
(``org.apache.kafka:kafka_2.13``, pinned below) through the machine's Maven into a cache folder
(``BUS_KAFKA_HOME``, default ``~/.cache/citybus/kafka-<version>``), and the Java that runs them.
The first start downloads them, with a line per jar; every later start downloads nothing."""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from bus.kafka.exceptions import LocalKafkaError

KAFKA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
#: The slf4j 1.7 binding for Kafka's log4j2 (Kafka pulls log4j-core 2.25.5 itself).
LOG4J_VERSION = "2.25.5"
MIN_JAVA = 17

Say = Callable[[str], None]


def default_home() -> Path:
    if os.environ.get("BUS_KAFKA_HOME"):
        return Path(os.environ["BUS_KAFKA_HOME"]).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "citybus" / f"kafka-{KAFKA_VERSION}"


def java_binary() -> str:
    """The java to run Kafka with (JAVA_HOME's, else the PATH's), checked to be 17 or newer."""
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    if not java or not Path(java).exists():
        raise LocalKafkaError(
            "Apache Kafka needs Java 17 or newer, and no `java` was found: install a JDK "
            "(Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME; "
            "or run the embedded broker instead (`bus up --demo`, `bus broker embedded`)"
        )
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise LocalKafkaError(
            f"Apache Kafka {KAFKA_VERSION} needs Java {MIN_JAVA} or newer; {java} is Java {major or '?'}: "
            "install a newer JDK (Debian: apt-get install openjdk-17-jre-headless) or point JAVA_HOME at one"
        )
    return java


def _pom() -> str:
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ]
    body = "".join(
        f"<dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        "<groupId>city.bus</groupId><artifactId>local-kafka</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{body}</dependencies></project>\n"
    )


def kafka_jars(home: Path | None = None, say: Say | None = None) -> Path:
    """The folder of Kafka's jars, downloaded by Maven the first time (a line per jar).
    Several processes starting at once (test workers) download once: the others wait."""
    home = home or default_home()
    libs = home / "libs"
    if (home / "complete").exists():
        return libs
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (home / "complete").exists():
            return libs
        return _fetch_jars(home, libs, say)


def _fetch_jars(home: Path, libs: Path, say: Say | None) -> Path:
    mvn = shutil.which("mvn")
    if not mvn:
        raise LocalKafkaError(
            f"Apache Kafka's jars are not in {home} yet, and fetching them needs Maven: install it "
            "(Debian: apt-get install maven), or set BUS_KAFKA_HOME to a folder that holds them "
            "(libs/*.jar and a file named `complete`)"
        )
    java_binary()
    say = say or (lambda line: None)
    say(f"kafka: fetching Apache Kafka {KAFKA_VERSION}'s jars from Maven Central into {home} (once) ...")
    with tempfile.TemporaryDirectory(dir=home, prefix="fetch-") as tmp:
        (Path(tmp) / "pom.xml").write_text(_pom())
        staging = Path(tmp) / "libs"
        proc = subprocess.Popen(
            [mvn, "-B", "-f", str(Path(tmp) / "pom.xml"), "dependency:copy-dependencies",
             f"-DoutputDirectory={staging}", "-Dmdep.includeScope=runtime"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*m", "", line.rstrip())
            tail = (tail + [line])[-30:]
            done = re.match(r"Downloaded from \S+: \S+/([^/]+\.jar) \((.+)\)", line)
            if done:
                say(f"kafka: downloaded {done.group(1)} ({done.group(2)})")
        if proc.wait() != 0 or not any(staging.glob("kafka_*.jar")):
            detail = "\n".join(line for line in tail if line.strip())
            raise LocalKafkaError(
                f"Maven could not fetch Apache Kafka {KAFKA_VERSION}'s jars (exit code {proc.returncode}); "
                f"check that Maven Central is reachable (a proxy in ~/.m2/settings.xml?). Maven said:\n{detail}"
            )
        if libs.exists():
            shutil.rmtree(libs)
        staging.rename(libs)
    (home / "complete").write_text(KAFKA_VERSION + "\n")
    say(f"kafka: {len(list(libs.glob('*.jar')))} jars in {libs}")
    return libs
