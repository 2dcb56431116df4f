"""A Confluent-compatible Schema Registry for demos and tests: Apicurio Registry on loopback.

Apicurio Registry is a Quarkus application; Maven Central has its jars but no runnable
build. So, once per machine, Maven resolves ``io.apicurio:apicurio-registry-app`` and
Quarkus' own build step turns it into a runnable jar plus ``lib/``, in the user cache
(``$XDG_CACHE_HOME/streamscore/schema-registry/apicurio-<version>``, default
``~/.cache/...``), behind a file lock and one atomic rename like the Kafka broker's
jars. The build's configuration is the application's own ``application.properties``
(copied out of its jar) plus the one line Quarkus needs to find the application's
beans in a dependency jar (it carries no bean index).

Why 2.0.2.Final: it is the newest release whose modules all resolve from Maven Central
and that runs on Java 17 (2.6.x needs ``apicurio-registry-schema-util-provider``, which
Central does not serve; 3.x is built for Java 21 and several of its modules are missing
from Central too). Its one dependency outside Central, the everit JSON Schema validator,
is left out: JSON Schema compatibility rules cannot run, registering and reading
schemas of every kind works. Storage is in-memory H2: a fresh, empty registry per start.

``start_registry()`` runs it on a free loopback port (dies with its parent) and waits
until the Confluent-compatible API answers; its ``url`` is what a
``SchemaRegistryClient`` takes. Dev infrastructure: the worker never imports this.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from schemas.errors import InfrastructureError
from stream.dev.embedded import EmbeddedProcess, _die_with_parent
from stream.endpoints import free_port

__all__ = ["APICURIO_VERSION", "EmbeddedRegistry", "fetch_registry", "start_registry"]

APICURIO_VERSION = "2.0.2.Final"
_QUARKUS_VERSION = "1.12.2.Final"  # the version this Apicurio release was built with
_CCOMPAT = "/apis/ccompat/v6"
_FETCH_TIMEOUT_S = 1200
JVM_OPTS = ("-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-XX:-UsePerfData", "-Djava.awt.headless=true")

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>streamscore</groupId>
  <artifactId>embedded-registry</artifactId>
  <version>1</version>
  <properties>
    <maven.compiler.release>17</maven.compiler.release>
    <project.build.sourceEncoding>UTF-8</project.build.sourceEncoding>
  </properties>
  <dependencyManagement>
    <dependencies>
      <dependency>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-bom</artifactId>
        <version>{_QUARKUS_VERSION}</version>
        <type>pom</type>
        <scope>import</scope>
      </dependency>
    </dependencies>
  </dependencyManagement>
  <dependencies>
    <dependency>
      <groupId>io.apicurio</groupId>
      <artifactId>apicurio-registry-app</artifactId>
      <version>{APICURIO_VERSION}</version>
      <exclusions>
        <!-- Not on Maven Central; only JSON Schema compatibility rules use it. -->
        <exclusion>
          <groupId>com.github.everit-org.json-schema</groupId>
          <artifactId>org.everit.json.schema</artifactId>
        </exclusion>
      </exclusions>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>io.quarkus</groupId>
        <artifactId>quarkus-maven-plugin</artifactId>
        <version>{_QUARKUS_VERSION}</version>
        <executions>
          <execution>
            <goals><goal>build</goal></goals>
          </execution>
        </executions>
      </plugin>
    </plugins>
  </build>
</project>
"""
# Apicurio's parent POM names repositories this machine cannot reach: Central only.
_SETTINGS = """<settings><mirrors><mirror><id>central-only</id><mirrorOf>*</mirrorOf>
<url>https://repo.maven.apache.org/maven2</url></mirror></mirrors></settings>
"""
_INDEX_APP = """
quarkus.index-dependency.registry-app.group-id=io.apicurio
quarkus.index-dependency.registry-app.artifact-id=apicurio-registry-app
"""


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.expanduser("~/.cache")
    return Path(root) / "streamscore" / "schema-registry" / f"apicurio-{APICURIO_VERSION}"


def _run_maven(args: list[str], work: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise InfrastructureError("the schema registry is not built and Maven (mvn) is "
                                  "not on PATH")
    try:
        done = subprocess.run([mvn, "-q", "-B", "-s", str(work / "settings.xml"), *args],
                              capture_output=True, text=True, timeout=_FETCH_TIMEOUT_S,
                              cwd=work)
    except subprocess.TimeoutExpired:
        raise InfrastructureError(
            f"Maven did not build Apicurio Registry in {_FETCH_TIMEOUT_S} s") from None
    if done.returncode != 0:
        lines = [ln for ln in (done.stdout + done.stderr).splitlines() if "ERROR" in ln]
        raise InfrastructureError(
            f"Maven could not build Apicurio Registry {APICURIO_VERSION}: "
            f"{(lines or ['no output'])[0][:300]}")


def fetch_registry() -> Path:
    """The runnable registry jar, built once per machine into the user cache."""
    final = _cache_dir()
    runner = final / "registry-runner.jar"
    if runner.is_file():
        return runner
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it
        if runner.is_file():
            return runner
        work = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            (work / "pom.xml").write_text(_POM)
            (work / "settings.xml").write_text(_SETTINGS)
            _run_maven(["dependency:copy", f"-Dartifact=io.apicurio:apicurio-registry-app:"
                        f"{APICURIO_VERSION}", f"-DoutputDirectory={work / 'app'}"], work)
            jar = next((work / "app").glob("apicurio-registry-app-*.jar"))
            with zipfile.ZipFile(jar) as zf:
                props = zf.read("application.properties").decode()
            resources = work / "src" / "main" / "resources"
            resources.mkdir(parents=True)
            (resources / "application.properties").write_text(props + _INDEX_APP)
            _run_maven(["package", "-DskipTests"], work)
            out = work / "out"
            out.mkdir()
            shutil.move(work / "target" / "lib", out / "lib")
            # The runner jar's manifest names lib/ relatively: keep them side by side.
            shutil.move(work / "target" / "embedded-registry-1-runner.jar",
                        out / "registry-runner.jar")
            os.rename(out, final)  # atomic: the cache is whole or absent
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return runner


@dataclass
class EmbeddedRegistry:
    """A running registry: its process, and the Confluent-compatible API's URL."""

    process: EmbeddedProcess

    @property
    def url(self) -> str:
        """Base URL of the Confluent-compatible API (a ``SchemaRegistryClient``'s url)."""
        return f"http://{self.process.host}:{self.process.port}{_CCOMPAT}"

    def stop(self) -> None:
        """Stop the JVM and remove its scratch dir."""
        self.process.stop()


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: str,
                timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace").strip().splitlines()[-1:]
            raise InfrastructureError(
                f"the schema registry exited ({proc.returncode}): {(tail or [''])[0][:300]}")
        try:
            with urllib.request.urlopen(f"{url}/subjects", timeout=2) as resp:  # noqa: S310
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise InfrastructureError(f"the schema registry did not answer at {url} in {timeout:.0f} s")


def start_registry(*, host: str = "127.0.0.1", port: int | None = None,
                   timeout: float = 90.0) -> EmbeddedRegistry:
    """Build (once) and start Apicurio Registry on loopback; wait until it answers."""
    java = shutil.which("java")
    if java is None:
        raise InfrastructureError("the schema registry needs Java 17+ (java is not on PATH)")
    runner = fetch_registry()
    port = port or free_port()
    data_dir = tempfile.mkdtemp(prefix="streamscore-registry-")
    log_path = os.path.join(data_dir, f"apicurio-{port}.log")
    cmd = [java, *JVM_OPTS, f"-Dquarkus.http.host={host}", f"-Dquarkus.http.port={port}",
           "-jar", str(runner)]
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=data_dir,
                                preexec_fn=_die_with_parent)
    handle = EmbeddedRegistry(EmbeddedProcess("apicurio", host, port, proc.pid, data_dir,
                                              log_path, proc))
    try:
        _wait_ready(handle.url, proc, log_path, timeout)
    except BaseException:
        handle.stop()
        raise
    return handle
