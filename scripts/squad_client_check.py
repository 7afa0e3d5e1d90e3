"""Exercises the genuine squad-client (PyPI `squad-client`) against a running
squadron: its commands and its object API. Run by scripts/squad-client-check.

Usage: squad_client_check.py URL ADMIN_TOKEN
"""
import json
import os
import subprocess
import sys
import tempfile

from squad_client.core.api import SquadApi
from squad_client.core.models import Squad, ALL

url, token = sys.argv[1], sys.argv[2]
client = [os.path.join(os.path.dirname(sys.executable), "squad-client"), "--squad-host", url, "--squad-token", token]


def run(*args):
    result = subprocess.run(client + list(args), capture_output=True, text=True)
    assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result.stdout + result.stderr


def check(condition, what):
    assert condition, what
    print("ok  ", what)


work = tempfile.mkdtemp()
def write(name, content):
    path = os.path.join(work, name)
    with open(path, "w") as f:
        f.write(content)
    return path


run("create-or-update-project", "--group", "lkft", "--slug", "linux", "--name", "Linux",
    "--plugins", "linux-log-parser,tradefed", "--settings", '{"CI_LAVA_HANDLE_SUITE": true}')
run("create-or-update-project", "--group", "lkft", "--slug", "linux", "--description", "kernel tests")
tests = write("tests.json", json.dumps({"ltp/fork01": "pass", "ltp/fork02": {"result": "fail", "log": "oops"}, "boot": "skip"}))
metrics = write("metrics.json", json.dumps({"bench/boot-time": [3.0, 2.0]}))
metadata = write("metadata.json", json.dumps({"job_id": "1001", "kernel": "6.1"}))
log = write("log.txt", "booting...\n")
out = run("submit", "--group", "lkft", "--project", "linux", "--build", "v1", "--environment", "qemu",
          "--results", tests, "--metrics", metrics, "--metadata", metadata, "--logs", log, "--attachments", log)
check("TESTRUN_ID" in out, "submit with files")
run("submit", "--group", "lkft", "--project", "linux", "--build", "v1", "--environment", "x86",
    "--result-name", "ltp/clone01", "--result-value", "pass")
results = write("results.txt", "")
run("download-results", "--group", "lkft", "--project", "linux", "--build", "v1", "--filename", results)
lines = open(results).read().split("\n")
check("qemu/ltp/fork02 fail" in lines and "x86/ltp/clone01 pass" in lines, "download-results")

SquadApi.configure(url=url, token=token)
squad = Squad()
group = squad.group("lkft")
check(group is not None and group.slug == "lkft", "Squad().group()")
project = group.project("linux")
check(project.full_name == "lkft/linux" and project.description == "kernel tests", "group.project()")
check(project.enabled_plugins_list == ["linux-log-parser,tradefed"] or project.enabled_plugins_list == ["linux-log-parser", "tradefed"], "project plugins")
check(project.basic_settings.build_confidence_count == 20, "project.basic_settings")
build = project.build("v1")
check(build is not None and build.version == "v1" and build.finished, "project.build()")
testruns = build.testruns()
check(len(testruns) == 2, "build.testruns()")
run_ = [t for t in testruns.values() if t.job_id == "1001"][0]
check(run_.metadata.kernel == "6.1", "testrun.metadata")
check(len(run_.tests()) == 3, "testrun.tests()")
check(len(run_.metrics()) == 1, "testrun.metrics()")
statuses = squad.statuses(test_run=run_.id, suite__isnull=True)
status = list(statuses.values())[0]
check((status.tests_pass, status.tests_fail, status.tests_skip) == (1, 1, 1), "squad.statuses()")
check(len(build.tests()) == 4, "build.tests()")
failures = build.tests(result=False)
check([t.name for t in failures.values()] == ["ltp/fork02"], "build.tests(result=False)")
check(len(build.metrics()) == 1, "build.metrics()")
check(build.metadata.kernel == "6.1", "build.metadata")
envs = project.environments(count=ALL)
check(sorted(e.slug for e in envs.values()) == ["qemu", "x86"], "project.environments()")
suites = project.suites(count=ALL)
check(sorted(s.slug for s in suites.values()) == ["/", "bench", "ltp"], "project.suites()")
attachments = run_.attachments
check(attachments and attachments[0].filename == "log.txt", "testrun attachments")
check(attachments[0].read() == b"booting...\n", "attachment download")
check(len(squad.tests(count=ALL, test_run=run_.id)) == 3, "squad.tests(test_run=)")
print("squad-client works with squadron")
