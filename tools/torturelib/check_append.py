"""The list-append checker: judges a history written by `sqlload append` against the
final lists `sqlload append-check` read (docs/torture-checkers.md).

A history is the lines of one or more append logs:

    append ok|fail|unknown CLIENT KEY V LSN START_MS END_MS CODE
    read ok|fail CLIENT KEY LSN TAG V1,V2,...|- START_MS END_MS CONSISTENCY CODE

(lines starting with '#' are comments). Times are milliseconds of the machine's
monotonic clock, so operations of several processes compare in real time. An append's
START is the first send of its value and END the moment it settled; an acknowledged
append ("ok") was applied between them, a failed one never, an unknown one perhaps, at
any time after START (its END is only when the client stopped waiting).

check(lines, final_lists) returns the violations found, each a dict with kind, key,
ops (the log lines involved), values and message. The kinds:

- lost: an acknowledged append missing from its key's final list;
- duplicate: a value more than once in a read or a final list;
- phantom: a value in a read or a final list that no append of this key tried, or
  whose append failed (nothing of it was applied);
- future: a read shows a value whose append started after the read had ended;
- order: a read's list is not a prefix of the key's final list (a value reordered,
  or shown and later vanished: an unknown append seen and then lost), or the final
  list puts a value before one whose append was acknowledged before it was sent;
- realtime: a read that must see an acknowledged append does not: a strong read, any
  append acknowledged before it started; a session read, its own client's appends
  acknowledged before it started, and its answer's LSN at least theirs;
- monotonic: a client's read, through the same endpoint tag (region/instance), shows
  a key's list shorter than an earlier read of it, or answers at a lower LSN than an
  earlier read, the earlier one having ended before the later started.

Eventual reads may lag: only the kinds that do not depend on freshness apply to them.

A long run's reads hold far more values than memory should: the lines are read three
times (appends; then reads, one at a time, each checked and dropped but for a few
numbers; then the lines the violations name), so `lines` must be a sequence or another
object that can be iterated over more than once (the CLI passes its files that way).

    python3 tools/torturelib/check_append.py --log FILE [--log FILE2] --final FILE.json

prints {"violations": [...], "counts": {...}} and exits 1 when there is a violation,
2 when the input cannot be read.
"""

import argparse
import bisect
import collections
import json
import sys

KINDS = ("lost", "duplicate", "phantom", "future", "order", "realtime", "monotonic")
SHOW_MAX = 5  # values and reads named in one violation


class Op:
    """One log line: an append or a read."""

    __slots__ = ("type", "outcome", "client", "key", "v", "lsn", "tag", "values", "listed",
                 "count", "start", "end", "consistency", "code", "n")

    def __init__(self, **fields):
        for name in self.__slots__:
            setattr(self, name, fields.get(name))


def _list(text):
    return [] if text == "-" else [int(x) for x in text.split(",")]


def parse_line(line, n=0, lazy=False):
    """One log line as an Op, or None for a blank line or a comment. ValueError when it
    is neither. lazy: a read's values stay text (listed) until asked for (_values)."""
    f = line.split()
    if not f or f[0].startswith("#"):
        return None
    try:
        if f[0] == "append" and len(f) == 9 and f[1] in ("ok", "fail", "unknown"):
            return Op(type="append", outcome=f[1], client=f[2], key=int(f[3]), v=int(f[4]),
                      lsn=int(f[5]), start=float(f[6]), end=float(f[7]), code=f[8], n=n)
        if f[0] == "read" and len(f) == 11 and f[1] in ("ok", "fail"):
            return Op(type="read", outcome=f[1], client=f[2], key=int(f[3]), lsn=int(f[4]),
                      tag=f[5], values=None if lazy else _list(f[6]), listed=f[6],
                      start=float(f[7]), end=float(f[8]), consistency=f[9], code=f[10], n=n)
    except ValueError:
        pass
    raise ValueError(f"log line {n}: not an append or read line: {line.strip()[:200]!r}")


def _values(op):
    """A read's values, parsed from its text on first use."""
    if op.values is None:
        try:
            op.values = _list(op.listed)
        except ValueError:
            raise ValueError(f"log line {op.n}: a read's list that is not integers: "
                             f"{op.listed[:200]!r}") from None
    return op.values


def _running_max(seq, floor=float("-inf")):
    out, top = [], floor
    for x in seq:
        top = max(top, x)
        out.append(top)
    return out


def _ops(lines, kind):
    """The ops of one kind ("append" or "read"); every other line is only checked to be a
    comment or an op (a cheap look at its first word)."""
    for n, line in enumerate(lines, 1):
        first = line.split(None, 1)[0] if line.strip() else "#"
        if first == kind:
            yield parse_line(line, n, lazy=True)
        elif first not in ("append", "read") and not first.startswith("#"):
            parse_line(line, n)  # raises


def _violation(kind, key, ns, message, values=()):
    """ns: the line numbers of the ops involved; _fill_lines turns them into the lines."""
    return {"kind": kind, "key": key, "ops": list(ns)[:SHOW_MAX + 1],
            "values": list(values)[:SHOW_MAX], "message": message}


def _fill_lines(violations, lines):
    wanted = {n for v in violations for n in v["ops"]}
    text = {}
    for n, line in enumerate(lines, 1):
        if n in wanted:
            text[n] = line.rstrip("\n")
    for v in violations:
        v["ops"] = [text[n] for n in v["ops"]]


def _shown(values):
    more = len(values) - SHOW_MAX
    shown = ", ".join(str(v) for v in values[:SHOW_MAX])
    return shown + (f" (and {more} more)" if more > 0 else "")


def _where(op):
    via = f" via {op.tag}" if op.type == "read" else ""
    return f"line {op.n}, client {op.client}{via}"


class _History:
    """The appends of a history, the final lists with what reads are compared against,
    and what reads leave behind."""

    def __init__(self, lines, final_lists):
        self.appends = list(_ops(lines, "append"))
        self.by_value = {}
        for a in self.appends:
            if a.v in self.by_value:
                raise ValueError(f"log line {a.n}: value {a.v} was appended before (line "
                                 f"{self.by_value[a.v].n}): runs must not share --id-base")
            self.by_value[a.v] = a
        self.final = {int(k): list(v) for k, v in final_lists.items()}
        for a in self.appends:
            self.final.setdefault(a.key, [])
        self.phantoms = {}  # (key, value) -> [reads showing it, first line numbers, final?]
        # (client, tag) -> (start, end, key, length, lsn, line number) of its reads
        self.seen = collections.defaultdict(list)
        self.reads_ok = self.reads_fail = 0
        self.by_consistency = collections.Counter()
        self._index_final()
        self._index_acked()

    def _index_final(self):
        """Per key: the final list as text, each value's first position, and up to where
        a prefix holds no repeated value, no phantom, and the latest START of its
        appends: what a read that is a prefix of the final list is checked against."""
        self.final_sets, self.final_text, self.pos = {}, {}, {}
        self.clean_dup, self.clean_phantom, self.start_max = {}, {}, {}
        for key, values in self.final.items():
            self.final_sets[key] = set(values)
            self.final_text[key] = ",".join(str(v) for v in values)
            pos = self.pos[key] = {}
            self.clean_dup[key] = self.clean_phantom[key] = len(values)
            for i, v in enumerate(values):
                if v in pos:
                    self.clean_dup[key] = min(self.clean_dup[key], i)
                else:
                    pos[v] = i
                if self.is_phantom(key, v):
                    self.clean_phantom[key] = min(self.clean_phantom[key], i)
            self.start_max[key] = _running_max(
                self.by_value[v].start if not self.is_phantom(key, v) else float("-inf")
                for v in values)

    def _index_acked(self):
        """Acknowledged appends by END, per key and per (key, client), with the running
        maximum of their positions in the final list (infinite when absent); per client,
        the running maximum LSN."""
        self.acked = collections.defaultdict(list)
        by_client = collections.defaultdict(list)
        own = collections.defaultdict(list)
        for a in self.appends:
            if a.outcome == "ok":
                self.acked[a.key].append(a)
                by_client[(a.key, a.client)].append(a)
                own[a.client].append((a.end, a.lsn))
        self.acked_index, self.own_lsn = {}, {}
        for group, lst in list(self.acked.items()) + list(by_client.items()):
            lst.sort(key=lambda a: a.end)
            key = group if isinstance(group, int) else group[0]
            self.acked_index[group] = ([a.end for a in lst], _running_max(
                self.pos[key].get(a.v, float("inf")) for a in lst), lst)
        for client, lst in own.items():
            lst.sort()
            self.own_lsn[client] = ([end for end, _ in lst], _running_max(lsn for _, lsn in lst))

    def is_phantom(self, key, v):
        a = self.by_value.get(v)
        return a is None or a.outcome == "fail" or a.key != key

    def note_phantom(self, key, v, read):
        entry = self.phantoms.setdefault((key, v), [0, [], False])
        if read is None:
            entry[2] = True
        elif not entry[1] or entry[1][-1] != read.n:
            entry[0] += 1
            if len(entry[1]) < SHOW_MAX:
                entry[1].append(read.n)

    def acked_before(self, r):
        """(j, running max of final positions, appends): the first j appends are those
        acknowledged before the read started (a strong read's, or a session's own)."""
        group = r.key if r.consistency == "strong" else (r.key, r.client)
        ends, pos_max, acked = self.acked_index.get(group, ((), (), ()))
        return bisect.bisect_left(ends, r.start), pos_max, acked

    def prefix_clean(self, r):
        """True when the read is a prefix of the final list that breaks nothing (then its
        values need not even be parsed); r.count is its length."""
        text, final = r.listed, self.final_text.get(r.key, "")
        if text == "-":
            r.count = 0
        elif final.startswith(text) and (len(final) == len(text) or final[len(text)] == ","):
            r.count = text.count(",") + 1
        else:
            return False
        if r.count > self.clean_dup.get(r.key, 0) or r.count > self.clean_phantom.get(r.key, 0):
            return False
        if r.count and self.start_max[r.key][r.count - 1] > r.end:
            return False
        if r.consistency in ("strong", "session"):
            j, pos_max, _ = self.acked_before(r)
            if j and pos_max[j - 1] >= r.count:
                return False
        return True

    def read(self, r):
        """The violations of one read that need no other read; remembers what the
        monotonic check needs, and drops the values."""
        if r.outcome != "ok":
            self.reads_fail += 1
            return []
        self.reads_ok += 1
        self.by_consistency[r.consistency] += 1
        out = _session_lsn(self, r)
        if not self.prefix_clean(r):
            values = _values(r)
            r.count = len(values)
            self.final.setdefault(r.key, [])  # a key only read: its final list is empty
            self.final_sets.setdefault(r.key, set())
            for v in values:
                if self.is_phantom(r.key, v):
                    self.note_phantom(r.key, v, r)
            out += (_duplicates(self, r.key, values, r) + _future(self, r) + _order_read(self, r)
                    + _realtime(self, r))
        if r.tag != "-":
            self.seen[(r.client, r.tag)].append((r.start, r.end, r.key, r.count, r.lsn, r.n))
        return out


def _lost(h):
    out = []
    for a in h.appends:
        if a.outcome == "ok" and a.v not in h.final_sets[a.key]:
            out.append(_violation(
                "lost", a.key, [a.n],
                f"append of {a.v} to key {a.key} ({_where(a)}) was acknowledged at LSN {a.lsn} "
                f"but is not in the key's final list of {len(h.final[a.key])} values", [a.v]))
    return out


def _duplicates(h, key, values, read):
    if len(set(values)) == len(values):
        return []
    twice = [v for v, n in collections.Counter(values).items() if n > 1]
    ns = ([read.n] if read else []) + [h.by_value[v].n for v in twice if v in h.by_value]
    what = f"the read of key {key} ({_where(read)})" if read else f"the final list of key {key}"
    return [_violation("duplicate", key, ns, f"{what} holds more than once: {_shown(twice)}",
                       twice)]


def _phantoms(h):
    for key, values in h.final.items():
        for v in values:
            if h.is_phantom(key, v):
                h.note_phantom(key, v, None)
    out = []
    for (key, v), (n_reads, ns, in_final) in sorted(h.phantoms.items()):
        a = h.by_value.get(v)
        if a is None:
            why = "was never appended"
        elif a.outcome == "fail":
            why = f"was appended only by a failed append ({_where(a)}, code {a.code})"
        else:
            why = f"was appended to key {a.key}, not to key {key} ({_where(a)})"
        where = [f"{n_reads} read(s)"] if n_reads else []
        where += ["the final list"] if in_final else []
        out.append(_violation("phantom", key, ([a.n] if a else []) + ns,
                              f"value {v} in {' and '.join(where)} of key {key} {why}", [v]))
    return out


def _future(h, r):
    early = [v for v in _values(r) if v in h.by_value and h.by_value[v].start > r.end]
    if not early:
        return []
    return [_violation(
        "future", r.key, [r.n] + [h.by_value[v].n for v in early],
        f"the read of key {r.key} ({_where(r)}) ended at {r.end:.3f} ms and shows "
        f"{_shown(early)}, whose append started only later", early)]


def _order_read(h, r):
    final, values = h.final[r.key], _values(r)
    if final[:len(values)] == values:
        return []
    i = next(i for i, v in enumerate(values) if i >= len(final) or final[i] != v)
    v = values[i]
    if v not in h.final_sets[r.key]:
        how = f"{v} at position {i} is not in the final list: it vanished"
    elif i >= len(final):
        how = f"it has {v} again at position {i}, past the final list's end"
    else:
        how = f"at position {i} it has {v} where the final list has {final[i]}: reordered"
    ns = [r.n] + ([h.by_value[v].n] if v in h.by_value else [])
    return [_violation(
        "order", r.key, ns,
        f"the read of key {r.key} ({_where(r)}) is not a prefix of the key's final list "
        f"({len(values)} values read, {len(final)} final): {how}", [v])]


def _order_final(h):
    """In a final list, no value may come before one acknowledged before it was sent."""
    out = []
    for key, values in sorted(h.final.items()):
        first = None  # the append with the latest START so far
        for v in values:
            if h.is_phantom(key, v):
                continue  # reported as such
            a = h.by_value[v]
            if first is not None and a.outcome == "ok" and a.end < first.start:
                out.append(_violation(
                    "order", key, [first.n, a.n],
                    f"the final list of key {key} has {first.v} before {v}, but the append of "
                    f"{v} was acknowledged ({a.end:.3f} ms) before the append of {first.v} was "
                    f"sent ({first.start:.3f} ms)", [first.v, v]))
            if first is None or a.start > first.start:
                first = a
    return out


def _realtime(h, r):
    if r.consistency not in ("strong", "session"):
        return []
    j, _, acked = h.acked_before(r)
    have = set(_values(r))
    missing = [a for a in acked[:j] if a.v not in have]
    if not missing:
        return []
    whose = "its own client's" if r.consistency == "session" else "acknowledged"
    return [_violation(
        "realtime", r.key, [r.n] + [a.n for a in missing],
        f"the {r.consistency} read of key {r.key} ({_where(r)}) started at {r.start:.3f} ms "
        f"and misses {len(missing)} {whose} append(s) acknowledged before it: "
        f"{_shown([a.v for a in missing])}", [a.v for a in missing])]


def _session_lsn(h, r):
    """A session read answers at least at its client's last acknowledged append."""
    if r.consistency != "session":
        return []
    ends, lsn_max = h.own_lsn.get(r.client, ((), ()))
    j = bisect.bisect_left(ends, r.start)
    if not j or r.lsn >= lsn_max[j - 1]:
        return []
    return [_violation(
        "realtime", r.key, [r.n],
        f"the session read of key {r.key} ({_where(r)}) answered at LSN {r.lsn}, below its "
        f"client's last acknowledged append (LSN {lsn_max[j - 1]})")]


def _monotonic(h):
    out = []
    for (client, tag), reads in sorted(h.seen.items()):
        ended = sorted(reads, key=lambda r: r[1])
        j, longest, highest = 0, {}, None  # of the reads ended so far
        for start, _, key, length, lsn, n in sorted(reads):
            while j < len(ended) and ended[j][1] < start:
                e = ended[j]
                if e[2] not in longest or e[3] > longest[e[2]][3]:
                    longest[e[2]] = e
                if highest is None or e[4] > highest[4]:
                    highest = e
                j += 1
            e = longest.get(key)
            if e is not None and length < e[3]:
                out.append(_violation(
                    "monotonic", key, [e[5], n],
                    f"client {client} read key {key} via {tag} as {length} values (line {n}) "
                    f"after reading it as {e[3]} (line {e[5]})"))
            if highest is not None and lsn < highest[4]:
                out.append(_violation(
                    "monotonic", key, [highest[5], n],
                    f"client {client} read via {tag} at LSN {lsn} (line {n}) after a read at "
                    f"LSN {highest[4]} (line {highest[5]}): back in time"))
    return out


def _counts(h, violations):
    outcomes = collections.Counter(a.outcome for a in h.appends)
    final_values = {v for values in h.final.values() for v in values}
    return {
        "appends_ok": outcomes["ok"], "appends_fail": outcomes["fail"],
        "appends_unknown": outcomes["unknown"],
        "unknown_present": sum(1 for a in h.appends
                               if a.outcome == "unknown" and a.v in final_values),
        "reads_ok": h.reads_ok, "reads_fail": h.reads_fail,
        "reads_by_consistency": dict(h.by_consistency),
        "keys": len(h.final), "final_values": sum(len(v) for v in h.final.values()),
        "violations": len(violations),
        "by_kind": dict(collections.Counter(v["kind"] for v in violations)),
    }


def check_with_counts(lines, final_lists):
    """(violations, counts) of a history (lines: iterable more than once) against the
    final lists {key: [values]}."""
    h = _History(lines, final_lists)
    violations = _lost(h)
    for key, values in sorted(h.final.items()):
        violations += _duplicates(h, key, values, None)
    violations += _order_final(h)
    for r in _ops(lines, "read"):
        violations += h.read(r)
    violations += _phantoms(h) + _monotonic(h)
    violations.sort(key=lambda v: (KINDS.index(v["kind"]), v["ops"][:1]))
    _fill_lines(violations, lines)
    return violations, _counts(h, violations)


def check(log_lines, final_lists):
    """The violations of a history (log lines) against {key: [values]} read at the end."""
    return check_with_counts(log_lines, final_lists)[0]


class Logs:
    """The lines of several log files, one after the other, read anew at each iteration."""

    def __init__(self, paths):
        self.paths = list(paths)
        for path in self.paths:
            open(path).close()  # an error now rather than halfway

    def __iter__(self):
        for path in self.paths:
            with open(path) as f:
                yield from f


def load_final(path):
    """{key: [values]} from append-check's JSON (its "lists"), or from a plain mapping."""
    with open(path) as f:
        doc = json.load(f)
    return doc["lists"] if isinstance(doc, dict) and "lists" in doc else doc


def main(argv=None):
    ap = argparse.ArgumentParser(description="Judge a list-append history.")
    ap.add_argument("--log", action="append", required=True,
                    help="an append log (repeat for every process that shared the keys)")
    ap.add_argument("--final", required=True, help="the final lists (sqlload append-check)")
    args = ap.parse_args(argv)
    try:
        violations, counts = check_with_counts(Logs(args.log), load_final(args.final))
    except (OSError, ValueError) as e:
        print(f"check_append: {e}", file=sys.stderr)
        return 2
    json.dump({"violations": violations, "counts": counts}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
