"""The list-append checker (tools/torturelib/check_append.py) on synthetic histories: a
clean one passes, and each kind of violation planted in it is found, as its kind."""

import json
import os
import random
import subprocess
import sys
import tempfile
import unittest
import unittest.mock

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKER = os.path.join(HERE, "..", "..", "..", "tools", "torturelib", "check_append.py")
sys.path.insert(0, os.path.dirname(CHECKER))
import check_append  # noqa: E402


def append(outcome, client, key, v, lsn, start, end, code="-"):
    return f"append {outcome} {client} {key} {v} {lsn} {start:.3f} {end:.3f} {code}"


def read(client, key, lsn, tag, values, start, end, consistency, outcome="ok", code="-"):
    listed = ",".join(str(v) for v in values) if values else "-"
    return f"read {outcome} {client} {key} {lsn} {tag} {listed} {start:.3f} {end:.3f} " \
           f"{consistency} {code}"


# Two clients, two keys. Key 1: 11 and 12 acknowledged, 13 unknown (present at the end);
# key 2: 14 failed, 21 acknowledged. Every read is allowed, including an eventual read
# that lags behind an acknowledged append.
CLEAN = [
    "# append id_base=0 key_base=0 clients=2 keys=2",
    append("ok", "0.0", 1, 11, 5, 0.0, 1.0),
    append("ok", "0.1", 1, 12, 6, 0.5, 2.0),
    read("0.0", 1, 6, "r/i1", [11, 12], 2.5, 3.0, "session"),
    append("unknown", "0.1", 1, 13, 0, 3.0, 10.0, "timeout"),
    append("fail", "0.1", 2, 14, 0, 10.5, 11.0, "sql_error"),
    read("0.0", 1, 6, "r/i1", [11, 12], 4.0, 5.0, "strong"),
    append("ok", "0.0", 2, 21, 8, 5.0, 6.0),
    read("0.1", 2, 7, "r/i2", [], 11.5, 12.0, "eventual"),
    read("0.0", 1, 8, "r/i1", [11, 12, 13], 12.5, 13.0, "eventual"),
    read("0.0", 2, 8, "r/i1", [21], 13.5, 14.0, "session"),
    read("0.1", 1, 0, "-", [], 14.0, 19.0, "session", "fail", "lagging"),
]
FINAL = {"1": [11, 12, 13], "2": [21]}


def kinds(violations):
    return sorted({v["kind"] for v in violations})


def replaced(lines, i, line):
    return lines[:i] + [line] + lines[i + 1:]


class Clean(unittest.TestCase):
    def test_clean_history_passes(self):
        violations, counts = check_append.check_with_counts(CLEAN, FINAL)
        self.assertEqual(violations, [])
        self.assertEqual(counts["appends_ok"], 3)
        self.assertEqual(counts["appends_fail"], 1)
        self.assertEqual(counts["appends_unknown"], 1)
        self.assertEqual(counts["unknown_present"], 1)
        self.assertEqual(counts["reads_ok"], 5)
        self.assertEqual(counts["reads_fail"], 1)

    def test_unknown_append_may_be_absent(self):
        self.assertEqual(check_append.check(CLEAN[:-3], {"1": [11, 12], "2": [21]}), [])

    def test_eventual_reads_may_lag_and_differ_across_instances(self):
        lines = CLEAN + [read("0.1", 1, 2, "r/i3", [11], 20.0, 21.0, "eventual"),
                         read("0.1", 1, 1, "r/i6", [], 22.0, 23.0, "eventual")]
        self.assertEqual(check_append.check(lines, FINAL), [])

    def test_keys_of_json_final_state(self):
        doc = json.loads(json.dumps({"lsn": 9, "lists": FINAL}))
        self.assertEqual(check_append.check(CLEAN, doc["lists"]), [])


class Violations(unittest.TestCase):
    def assert_only(self, kind, lines, final):
        violations = check_append.check(lines, final)
        self.assertEqual(kinds(violations), [kind], json.dumps(violations, indent=1))
        for v in violations:
            self.assertTrue(v["message"], v)
            self.assertTrue(v["ops"] or v["kind"] == "phantom", v)  # a phantom may be in no op
            for op in v["ops"]:
                self.assertIn(op, lines)
        return violations

    def test_lost(self):
        (v,) = self.assert_only("lost", CLEAN[:-2], {"1": [11, 12, 13], "2": []})
        self.assertEqual((v["key"], v["values"]), (2, [21]))
        self.assertEqual(v["ops"], [CLEAN[7]])

    def test_duplicate_in_final(self):
        (v,) = self.assert_only("duplicate", CLEAN, {"1": [11, 12, 13, 13], "2": [21]})
        self.assertEqual(v["values"], [13])

    def test_duplicate_in_read(self):
        lines = CLEAN + [read("0.1", 2, 9, "r/i2", [21, 21], 15.0, 16.0, "eventual")]
        violations = check_append.check(lines, FINAL)
        self.assertIn("duplicate", kinds(violations))
        dup = [v for v in violations if v["kind"] == "duplicate"]
        self.assertEqual(dup[0]["ops"][0], lines[-1])

    def test_phantom_never_appended(self):
        (v,) = self.assert_only("phantom", CLEAN, {"1": [11, 12, 13, 99], "2": [21]})
        self.assertEqual((v["key"], v["values"]), (1, [99]))

    def test_phantom_of_a_failed_append(self):
        (v,) = self.assert_only("phantom", CLEAN, {"1": [11, 12, 13], "2": [21, 14]})
        self.assertEqual(v["values"], [14])
        self.assertIn("failed", v["message"])

    def test_phantom_under_another_key(self):
        (v,) = self.assert_only("phantom", CLEAN, {"1": [11, 12, 13], "2": [21, 12]})
        self.assertEqual((v["key"], v["values"]), (2, [12]))

    def test_future_read(self):
        lines = CLEAN + [read("0.1", 2, 8, "r/i9", [21], 4.0, 4.5, "eventual")]
        (v,) = self.assert_only("future", lines, FINAL)
        self.assertEqual(v["values"], [21])

    def test_order_value_read_then_vanished(self):
        # 13 (unknown) was read, and is not in the final list: it vanished
        (v,) = self.assert_only("order", CLEAN, {"1": [11, 12], "2": [21]})
        self.assertEqual(v["values"], [13])
        self.assertIn("vanished", v["message"])

    def test_order_reordered_read(self):
        lines = replaced(CLEAN, 3, read("0.0", 1, 6, "r/i1", [12, 11], 2.5, 3.0, "session"))
        (v,) = self.assert_only("order", lines, FINAL)
        self.assertIn("reordered", v["message"])

    def test_order_final_against_real_time(self):
        # 12 was acknowledged (2.0) before 13 was sent (3.0), yet 13 comes first
        appends = [line for line in CLEAN if line.startswith("append")]
        (v,) = self.assert_only("order", appends, {"1": [11, 13, 12], "2": [21]})
        self.assertEqual(v["values"], [13, 12])

    def test_realtime_strong_read_misses_acknowledged_append(self):
        lines = replaced(CLEAN, 6, read("0.0", 1, 5, "r/i3", [11], 4.0, 5.0, "strong"))
        (v,) = self.assert_only("realtime", lines, FINAL)
        self.assertEqual(v["values"], [12])

    def test_realtime_session_read_misses_own_append(self):
        lines = replaced(CLEAN, 10, read("0.0", 2, 8, "r/i1", [], 13.5, 14.0, "session"))
        (v,) = self.assert_only("realtime", lines, FINAL)
        self.assertEqual(v["values"], [21])

    def test_realtime_session_read_below_own_lsn(self):
        lines = replaced(CLEAN, 10, read("0.0", 2, 7, "r/i4", [21], 13.5, 14.0, "session"))
        (v,) = self.assert_only("realtime", lines, FINAL)
        self.assertIn("LSN 7", v["message"])

    def test_realtime_not_for_eventual_or_other_clients_session(self):
        # client 0.1's session read need not see 21, acknowledged to client 0.0
        lines = CLEAN + [read("0.1", 2, 8, "r/i2", [], 15.0, 16.0, "session"),
                         read("0.1", 2, 8, "r/i5", [], 17.0, 18.0, "eventual")]
        self.assertEqual(check_append.check(lines, FINAL), [])

    def test_monotonic_shorter_list(self):
        lines = CLEAN + [read("0.0", 1, 8, "r/i1", [11], 15.0, 16.0, "eventual")]
        (v,) = self.assert_only("monotonic", lines, FINAL)
        self.assertEqual(v["ops"], [CLEAN[9], lines[-1]])

    def test_monotonic_lower_lsn(self):
        lines = CLEAN + [read("0.0", 1, 7, "r/i1", [11, 12, 13], 15.0, 16.0, "eventual")]
        (v,) = self.assert_only("monotonic", lines, FINAL)
        self.assertIn("back in time", v["message"])

    def test_monotonic_needs_the_earlier_read_to_have_ended(self):
        # overlapping reads may come in either order
        lines = CLEAN + [read("0.0", 1, 9, "r/i7", [11, 12, 13], 15.0, 18.0, "eventual"),
                         read("0.0", 1, 8, "r/i7", [11, 12], 16.0, 17.0, "eventual")]
        self.assertEqual(check_append.check(lines, FINAL), [])


def random_history(seed):
    """A history of three clients on two keys, with now and then a read or a final list
    broken on purpose (a value cut, added, repeated or swapped)."""
    rnd = random.Random(seed)
    lines, lists, t, v = [], {1: [], 2: []}, 0.0, 0
    for _ in range(60):
        k, c = rnd.choice((1, 2)), rnd.choice(("0.0", "0.1", "0.2"))
        if rnd.random() < 0.5:
            v += 1
            outcome = rnd.choice(["ok"] * 6 + ["fail", "unknown"])
            if outcome == "ok" or (outcome == "unknown" and rnd.random() < 0.5):
                lists[k].append(v)
            lines.append(append(outcome, c, k, v, v if outcome == "ok" else 0, t,
                                t + rnd.random() * 3))
        else:
            got = list(lists[k])
            if rnd.random() < 0.03 and got:
                got = got[:rnd.randrange(len(got))]
            if rnd.random() < 0.01:
                got.append(rnd.randrange(1, 70))
            if rnd.random() < 0.01 and got:
                got.append(got[0])
            if rnd.random() < 0.01 and len(got) > 1:
                got[0], got[1] = got[1], got[0]
            lines.append(read(c, k, v + (rnd.random() < 0.02), rnd.choice(("r/a", "r/b")), got,
                              t, t + rnd.random() * 2,
                              rnd.choice(("strong", "session", "eventual"))))
        t += rnd.random() * 2
    final = {str(k): values for k, values in lists.items()}
    if rnd.random() < 0.05 and final["1"]:
        final["1"].pop(rnd.randrange(len(final["1"])))
    if rnd.random() < 0.05:
        final["2"].append(rnd.randrange(1, 80))
    return lines, final


class Shortcut(unittest.TestCase):
    def test_prefix_shortcut_agrees_with_reading_every_value(self):
        """A read that is a clean prefix of the final list is judged from its text alone;
        the verdicts must be those of parsing and checking every value."""
        slow = unittest.mock.patch.object(check_append._History, "prefix_clean",
                                          lambda self, r: False)
        clean = 0
        for seed in range(400):
            lines, final = random_history(seed)
            fast = check_append.check(lines, final)
            with slow:
                self.assertEqual(fast, check_append.check(lines, final), seed)
            clean += not fast
        self.assertGreater(clean, 40)  # both clean and broken histories were compared


class Input(unittest.TestCase):
    def test_malformed_line(self):
        with self.assertRaises(ValueError):
            check_append.check(CLEAN + ["append ok 0.0 1"], FINAL)

    def test_value_appended_twice(self):
        with self.assertRaises(ValueError):
            check_append.check(CLEAN + [append("ok", "0.1", 1, 11, 9, 20.0, 21.0)], FINAL)

    def test_cli(self):
        with tempfile.TemporaryDirectory() as d:
            log, final = os.path.join(d, "a.log"), os.path.join(d, "final.json")
            with open(log, "w") as f:
                f.write("\n".join(CLEAN) + "\n")
            for lists, code in ((FINAL, 0), ({"1": [11, 12, 13], "2": []}, 1)):
                with open(final, "w") as f:
                    json.dump({"lsn": 9, "lists": lists}, f)
                r = subprocess.run([sys.executable, CHECKER, "--log", log, "--final", final],
                                   capture_output=True, text=True)
                self.assertEqual(r.returncode, code, r.stderr)
                doc = json.loads(r.stdout)
                self.assertEqual(bool(doc["violations"]), bool(code))
                self.assertEqual(doc["counts"]["appends_ok"], 3)
            # the history of two processes in two logs
            logs = [os.path.join(d, "p1.log"), os.path.join(d, "p2.log")]
            for path, part in zip(logs, (CLEAN[:6], CLEAN[6:])):
                with open(path, "w") as f:
                    f.write("\n".join(part) + "\n")
            with open(final, "w") as f:
                json.dump({"lists": {"1": [11, 12, 13], "2": [21]}}, f)
            r = subprocess.run([sys.executable, CHECKER, "--log", logs[0], "--log", logs[1],
                                "--final", final], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertEqual(json.loads(r.stdout)["counts"]["reads_ok"], 5)
            with open(final, "w") as f:
                json.dump({"lists": {"1": [11, 12], "2": [21]}}, f)  # 13, read at line 10, vanished
            r = subprocess.run([sys.executable, CHECKER, "--log", logs[0], "--log", logs[1],
                                "--final", final], capture_output=True, text=True)
            self.assertEqual(r.returncode, 1, r.stderr)
            (v,) = json.loads(r.stdout)["violations"]
            self.assertEqual((v["kind"], v["ops"]), ("order", [CLEAN[9], CLEAN[4]]))
            r = subprocess.run([sys.executable, CHECKER, "--log", os.path.join(d, "none"),
                                "--final", final], capture_output=True, text=True)
            self.assertEqual(r.returncode, 2)


if __name__ == "__main__":
    unittest.main(verbosity=2)
