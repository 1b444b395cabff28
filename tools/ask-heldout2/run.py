#!/usr/bin/env python3
"""The second held-out question set for `POST /api/v1/ask` (issue 24), written by another hand
than the first (tools/ask-heldout) and after the parser was tuned on that one: asks each
question of a running server with a demo fleet, judges the interpretation against what the
question means and, where the numbers can be checked, the answer against the structured API;
prints the score per intent. Adapted from tools/ask-heldout/run.py (same judging rules, plus
alternatives for questions with more than one right reading, more time forms, and a check for
alarms not yet acknowledged).

It asserts no pass rate: it reports. Exit status is 0 unless the server could not be reached.

    # against a running `espwatch demo` (after its replay has caught up with the clock)
    python3 tools/ask-heldout2/run.py --url http://127.0.0.1:8080 --user demo --password PW
    # or let it start one (a fresh data directory, a free port; stopped at the end)
    python3 tools/ask-heldout2/run.py --demo target/debug/espwatch
    # options: --only PREFIX (e.g. flt-; `scoped`: only the scoped user's questions),
    # --json results.json, --failures (print every miss)

Standard library only. The questions were written without reading the parser, its question
sets or its tests (see questions.json "about").
"""

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
UTC = dt.timezone.utc

# Canonical units and conversions from the units a question may ask for.
PSI_PER = {"psi": 1.0, "kPa": 1 / 6.894757, "bar": 14.503774, "MPa": 145.03774}
BPD_PER = {"bbl/d": 1.0, "bpd": 1.0, "m³/d": 6.289811, "m3/d": 6.289811}


def to_canonical(value, unit):
    """A value in `unit` in espwatch's canonical unit (psi, bbl/d, °C, ...)."""
    if unit is None or value is None:
        return value
    u = unit.strip()
    if u in PSI_PER:
        return value * PSI_PER[u]
    if u in BPD_PER:
        return value * BPD_PER[u]
    if u in ("°F", "degF", "F"):
        return (value - 32.0) * 5.0 / 9.0
    if u in ("K",):
        return value - 273.15
    return value


class Api:
    def __init__(self, url, user=None, password=None, token=None):
        self.url = url.rstrip("/")
        self.user, self.password, self.token = user, password, token
        self.login_at = 0.0

    def login(self):
        if self.user is None:
            return
        body = json.dumps({"username": self.user, "password": self.password}).encode()
        req = urllib.request.Request(self.url + "/api/v1/auth/login", data=body,
                                     headers={"content-type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            self.token = json.load(r)["access_token"]
        self.login_at = time.time()

    def call(self, method, path, body=None):
        """(status, parsed JSON or text, seconds)."""
        if self.user is not None and time.time() - self.login_at > 600:
            self.login()
        data = json.dumps(body).encode() if body is not None else None
        headers = {"accept": "application/json"}
        if data is not None:
            headers["content-type"] = "application/json"
        if self.token:
            headers["authorization"] = "Bearer " + self.token
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        t0 = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        secs = time.perf_counter() - t0
        try:
            return status, json.loads(raw), secs
        except ValueError:
            return status, raw.decode(errors="replace"), secs

    def get(self, path, **params):
        q = {k: v for k, v in params.items() if v is not None}
        if q:
            path += "?" + urllib.parse.urlencode(q)
        status, body, _ = self.call("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {body}")
        return body


# ---------------------------------------------------------------- time

def parse_ts(s):
    if s is None:
        return None
    if isinstance(s, (int, float)):
        return dt.datetime.fromtimestamp(s, UTC)
    s = s.replace("Z", "+00:00")
    # fractions longer than microseconds
    s = re.sub(r"(\.\d{6})\d+", r"\1", s)
    return dt.datetime.fromisoformat(s).astimezone(UTC)


def iso(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def midnight(t):
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def zone(offset):
    """A fixed UTC offset (`+03:00`, `-05:30`) as a tzinfo."""
    if not offset:
        return UTC
    m = re.fullmatch(r"([+-])(\d\d):(\d\d)", offset)
    mins = int(m.group(2)) * 60 + int(m.group(3))
    return dt.timezone(dt.timedelta(minutes=mins if m.group(1) == "+" else -mins))


def expected_ranges(spec, now, tz=UTC):
    """Acceptable (from, to) pairs for a time spec, each as ((lo, hi), (lo, hi)) windows;
    None = the interpretation's range is not judged. A pair with None windows means that end
    may be absent (null) or anything."""
    m5 = dt.timedelta(minutes=5)
    m1 = dt.timedelta(minutes=1)
    today = midnight(now.astimezone(tz))  # calendar words are read in the question's zone
    day = dt.timedelta(days=1)
    near_now = (now - m5, now + m5)
    monday = today - dt.timedelta(days=today.weekday())
    if spec in (None, "event"):
        return None
    if spec == "now":
        return "now"
    if spec == "today":
        return [((today - m1, today + m1), near_now), ((today - m1, today + m1), (today + day - m1, today + day + m1))]
    if spec == "yesterday":
        return [((today - day - m1, today - day + m1), (today - m1, today + m1))]
    if spec == "since_yesterday":
        return [((today - day - m1, today - day + m1), near_now)]
    if spec == "last_night":
        y = today - day
        return [((y + dt.timedelta(hours=16), y + dt.timedelta(hours=22)),
                 (today + dt.timedelta(hours=4), today + dt.timedelta(hours=9)))]
    m = re.fullmatch(r"since_today:(\d\d):(\d\d)", spec)
    if m:
        # "since 6am": today at that time (in the question's zone), or yesterday if still ahead
        a = today + dt.timedelta(hours=int(m.group(1)), minutes=int(m.group(2)))
        if a > now:
            a -= day
        return [((a - m1, a + m1), near_now)]
    m = re.fullmatch(r"yesterday:(\d\d):(\d\d)/(\d\d):(\d\d)", spec)
    if m:
        y = today - day
        a = y + dt.timedelta(hours=int(m.group(1)), minutes=int(m.group(2)))
        b = y + dt.timedelta(hours=int(m.group(3)), minutes=int(m.group(4)))
        return [((a - m1, a + m1), (b - m1, b + m1))]
    if spec == "day_before_yesterday":
        return [((today - 2 * day - m1, today - 2 * day + m1), (today - day - m1, today - day + m1))]
    m = re.fullmatch(r"weekday:([0-6])", spec)
    if m:
        # "on Sunday": the last whole such day before today (0 = Monday)
        back = (today.weekday() - int(m.group(1))) % 7 or 7
        d0 = today - back * day
        return [((d0 - m1, d0 + m1), (d0 + day - m1, d0 + day + m1))]
    if spec in ("this_week", "since_monday"):
        return [((monday - m1, monday + m1), near_now)]
    if spec == "last_week":
        return [((monday - 7 * day - m1, monday - 7 * day + m1), (monday - m1, monday + m1)),
                ((now - 7 * day - m5, now - 7 * day + m5), near_now)]
    if spec == "weekend":
        sat = today - dt.timedelta(days=(today.weekday() - 5) % 7)
        end = sat + 2 * day
        ends = [(end - m1, end + m1)] if end <= now else [near_now]
        return [((sat - m1, sat + m1), e) for e in ends]
    m = re.fullmatch(r"last:(\d+)([mhd])", spec)
    if m:
        n = int(m.group(1)) * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]
        f = now - dt.timedelta(seconds=n)
        return [((f - m5, f + m5), near_now)]
    m = re.fullmatch(r"since:(\S+)", spec)
    if m:
        a = parse_ts(m.group(1))
        return [((a - m1, a + m1), near_now)]
    m = re.fullmatch(r"between:(\S+)/(\S+)", spec)
    if m:
        a, b = parse_ts(m.group(1)), parse_ts(m.group(2))
        return [((a - m1, a + m1), (b - m1, b + m1))]
    raise ValueError(f"unknown time spec {spec}")


def range_ok(spec, interp, now, tz=UTC):
    want = expected_ranges(spec, now, tz)
    if want is None:
        return True, ""
    f, t = parse_ts(interp.get("from")), parse_ts(interp.get("to"))
    if want == "now":
        # a current value: no range, or one that ends now
        if t is None or abs((t - now).total_seconds()) <= 600:
            return True, ""
        return False, f"range {interp.get('from')}..{interp.get('to')} for 'now'"
    for (flo, fhi), (tlo, thi) in want:
        if f is not None and t is not None and flo <= f <= fhi and tlo <= t <= thi:
            return True, ""
    exp = " or ".join(f"{iso(a[0] + (a[1] - a[0]) / 2)}..{iso(b[0] + (b[1] - b[0]) / 2)}" for a, b in want)
    return False, f"range {interp.get('from')}..{interp.get('to')}, expected ~{exp}"


# ---------------------------------------------------------------- the fleet as the API shows it

class Fleet:
    def __init__(self, api):
        self.api = api
        wells = api.get("/api/v1/wells")
        if isinstance(wells, dict):
            wells = wells.get("wells") or wells.get("items") or []
        self.fields = {}
        self.ids = []
        for w in wells:
            self.ids.append(w["well_id"])
            self.fields.setdefault(w.get("field"), []).append(w["well_id"])
        self.ids.sort()

    def expand(self, spec):
        if spec == "all":
            return sorted(self.ids)
        if isinstance(spec, dict):
            return sorted(self.fields.get(spec["field"], []))
        return sorted(spec)

    def latest(self):
        """{well: {"ts": datetime, "values": {channel: value}}} from /wells/latest."""
        body = self.api.get("/api/v1/wells/latest")
        rows = body.get("wells", body) if isinstance(body, dict) else body
        out = {}
        for r in rows:
            vals = r.get("fields") or r.get("values") or r.get("reading") or {}
            if "fields" in vals and isinstance(vals["fields"], dict):
                vals = vals["fields"]
            out[r["well_id"]] = {"ts": parse_ts(r.get("ts") or vals.get("ts")),
                                 "values": {k: v for k, v in vals.items() if isinstance(v, (int, float))}}
        return out

    def open_alarms(self):
        out = []
        for state in ("raised", "acknowledged"):
            body = self.api.get("/api/v1/alarms", state=state)
            out += body.get("alarms", body) if isinstance(body, dict) else body
        return out

    def all_alarms(self):
        body = self.api.get("/api/v1/alarms")
        return body.get("alarms", body) if isinstance(body, dict) else body


# ---------------------------------------------------------------- judging

# What each kind of question means, in the intents the API names (`interpretation.intent`).
INTENTS = {
    "current": {"value"},
    "aggregate": {"aggregate"},
    "trend": {"series", "trend"},
    "filter": {"filter"},
    "alarms": {"alarms", "condition"},
    "diagnosis": {"diagnosis"},
    "compare": {"compare"},
    "rank": {"top"},
}
OPS = {"<": {"lt", "le", "<", "<="}, ">": {"gt", "ge", ">", ">="}}
UNIT_ALIASES = {"kPa": {"kPa", "kpa"}, "bar": {"bar"}, "°F": {"°F", "degF", "F"},
                "°C": {"°C", "degC", "C"}, "m³/d": {"m³/d", "m3/d"}}


def duration_s(v):
    if v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*", str(v))
    if not m:
        return None
    return float(m.group(1)) * {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[m.group(2)]


def wells_ok(want, interp, fleet):
    """The interpretation's wells: listed, or named by field (`groups`)."""
    got = sorted(interp.get("wells") or [])
    groups = interp.get("groups") or []
    if want == "all":
        return (not got and not groups) or got == fleet.expand("all")
    if isinstance(want, dict):
        return got == fleet.expand(want) or (not got and groups == [want["field"]])
    # wells named by a pattern (`DEMO-01*`) come listed, with the pattern kept in `groups`
    return got == sorted(want) and (not groups or all(g.endswith("*") for g in groups))


def judge_interpretation(item, interp, fleet, now):
    """List of mismatches between what the question means and what was understood."""
    miss = []
    kind = item["intent"]
    intent = interp.get("intent")
    f = item.get("filter") or {}
    if "state" in f:
        if intent != "run_state" or interp.get("run_state") != f["state"]:
            miss.append(f"intent {intent}/run_state {interp.get('run_state')}, expected run_state {f['state']}")
    elif "stale_s" in f:
        if intent != "no_data" or duration_s(interp.get("stale_for")) != f["stale_s"]:
            miss.append(f"intent {intent}/stale_for {interp.get('stale_for')}, expected no_data {f['stale_s']}s")
    elif "alarm" in f or item.get("judge") == "answer":
        return miss  # judged on the answer only
    elif intent not in INTENTS[kind] | set(item.get("intent_also", [])):
        miss.append(f"intent {intent}, expected {kind}")
    if "channel" in f:
        flt = interp.get("filter") or {}
        chans = flt.get("channels") or []
        want_ch = f["channel"]
        ch_ok = (any(c.startswith("vibration") for c in chans) if want_ch == "vibration"
                 else chans == [want_ch])
        if not ch_ok:
            miss.append(f"filter channels {chans}, expected {want_ch}")
        if flt.get("op") not in OPS[f["op"]]:
            miss.append(f"filter op {flt.get('op')}, expected {f['op']}")
        v = flt.get("value")
        v = to_canonical(v, flt.get("unit")) if isinstance(v, (int, float)) else None
        if v is None or abs(v - f["value"]) > 0.005 * abs(f["value"]) + 0.01:
            miss.append(f"filter value {flt.get('value')} {flt.get('unit')}, expected {f['value']} (canonical)")
    if "wells" in item and not wells_ok(item["wells"], interp, fleet):
        miss.append(f"wells {interp.get('wells')} groups {interp.get('groups')}, expected {item['wells']}")
    elif "wells" not in item and kind in ("filter", "rank", "alarms") and (interp.get("wells") or interp.get("groups")):
        miss.append(f"wells {interp.get('wells')} groups {interp.get('groups')}, expected the whole fleet")
    if "channels" in item:
        got_ch = sorted(interp.get("channels") or [])
        # `channels_any`: other readings that are as right (vibration: both axes or either)
        if got_ch not in [sorted(c) for c in [item["channels"]] + item.get("channels_any", [])]:
            miss.append(f"channels {interp.get('channels')}, expected {item['channels']}"
                        + (f" or {item['channels_any']}" if item.get("channels_any") else ""))
    if "condition" in item and interp.get("condition") != item["condition"]:
        miss.append(f"condition {interp.get('condition')}, expected {item['condition']}")
    elif kind == "alarms" and "condition" not in item and interp.get("condition"):
        miss.append(f"condition {interp.get('condition')}, expected none (all alarms)")
    for key in ("limit", "order", "alarm_state"):
        if key in item and interp.get(key) != item[key]:
            miss.append(f"{key} {interp.get(key)}, expected {item[key]}")
    if "agg" in item and interp.get("agg") != item["agg"] and interp.get("agg") not in item.get("agg_any", []):
        miss.append(f"agg {interp.get('agg')}, expected {item['agg']}")
    if "step" in item and duration_s(interp.get("step")) != item["step"]:
        miss.append(f"step {interp.get('step')}, expected {item['step']}s")
    if "time" in item:
        # `time_zone`: the zone the question's own words name (e.g. "since 08:00 UTC"), when it
        # is not the request's display zone
        ok, why = range_ok(item["time"], interp, now, zone(item.get("time_zone", item.get("timezone"))))
        if not ok:
            miss.append(why)
    elif kind in ("alarms",) and "condition" in item and interp.get("from") is not None:
        pass  # an open-condition question answered over a range is still about those wells
    return miss


def close(a, b, rel=0.01, abs_=0.05):
    return a is not None and b is not None and abs(a - b) <= max(rel * abs(b), abs_)


def answer_values(answer):
    return [v for v in (answer.get("values") or []) if isinstance(v, dict)]


def judge_answer(item, interp, answer, fleet, before, after):
    """Mismatches between the answer's numbers or wells and the structured API (for the
    interpretation as given, so a wrong interpretation is not counted twice)."""
    check = item.get("check")
    miss = []
    if check is None:
        return miss
    unit = item.get("unit")
    vals = answer_values(answer)
    if unit and vals:
        units = {v.get("unit") for v in vals if v.get("unit")}
        if not units or not units <= UNIT_ALIASES.get(unit, {unit}):
            miss.append(f"answer unit {sorted(units)}, expected {unit}")
    if check == "latest":
        for w in interp.get("wells") or fleet.expand(item.get("wells", "all")):
            for ch in interp.get("channels") or []:
                got = [v for v in vals if v.get("well_id") == w and v.get("channel") == ch]
                cands = [s[w]["values"].get(ch) for s in (before, after) if w in s]
                cands = [c for c in cands if c is not None]
                if not got:
                    if cands:
                        miss.append(f"no value for {w} {ch} (API: {cands[0]})")
                    continue
                g = to_canonical(got[0].get("value"), got[0].get("unit"))
                if not any(close(g, c, 0.005, 0.06) for c in cands):
                    miss.append(f"{w} {ch}: answer {got[0].get('value')} {got[0].get('unit')}, API latest {cands}")
    elif check == "aggregate":
        agg = interp.get("agg")
        f, t = interp.get("from"), interp.get("to")
        for w in interp.get("wells") or []:
            for ch in interp.get("channels") or []:
                got = [v for v in vals if v.get("well_id") == w and v.get("channel") == ch]
                body = fleet.api.get(f"/api/v1/wells/{w}/telemetry", fields=ch, max_points=1_000_000,
                                     **{"from": f, "to": t})
                xs = [x for x in body["fields"].get(ch, []) if x is not None]
                want = None
                if xs:
                    want = {"avg": sum(xs) / len(xs), "min": min(xs), "max": max(xs)}.get(agg)
                if not got:
                    if want is not None:
                        miss.append(f"no {agg} for {w} {ch} (API: {want:.4g} over {len(xs)} readings)")
                    continue
                g = to_canonical(got[0].get("value"), got[0].get("unit"))
                if want is None or not close(g, want, 0.002, 0.01):
                    miss.append(f"{w} {ch} {agg}: answer {got[0].get('value')} {got[0].get('unit')}, "
                                f"API {want} over {len(xs)} readings")
    elif check == "filter":
        f = item["filter"]
        scope = set(fleet.expand(item.get("wells", "all")))
        sets = []
        for snap in (before, after):
            s = set()
            for w, row in snap.items():
                if w not in scope:
                    continue
                v = row["values"]
                if "channel" in f:
                    x = v.get(f["channel"])
                    if x is not None and (x < f["value"] if f["op"] == "<" else x > f["value"]):
                        s.add(w)
                elif "state" in f:
                    stopped = (v.get("frequency_hz") or 0) <= 0.5 and (v.get("motor_current_a") or 0) <= 1.0
                    if stopped == (f["state"] == "stopped"):
                        s.add(w)
                elif "stale_s" in f:
                    if row["ts"] is None or (now_utc() - row["ts"]).total_seconds() > f["stale_s"]:
                        s.add(w)
            sets.append(s)
        got = set(answer.get("wells") or [])
        if got != sets[0] and got != sets[1]:
            miss.append(f"answer wells {sorted(got)}, API says {sorted(sets[1])}")
    elif check == "series":
        series = [x for x in (answer.get("series") or []) if isinstance(x, dict)]
        if not series:
            miss.append("no series in the answer")
        for x in series:
            w, ch = x.get("well_id"), x.get("channel")
            body = fleet.api.get(f"/api/v1/wells/{w}/telemetry", fields=ch, step=x.get("step"),
                                 agg=x.get("agg") or interp.get("agg") or "avg",
                                 **{"from": interp.get("from"), "to": interp.get("to")})
            ts = [parse_ts(t) for t in body.get("ts", [])]
            api_pts = {t: v for t, v in zip(ts, body["fields"].get(ch, [])) if v is not None}
            got = {parse_ts(t): v for t, v in zip(x.get("ts") or [], x.get("values") or []) if v is not None}
            conv = [to_canonical(v, x.get("unit")) for v in got.values()]
            bad = [t for t, v in zip(got, conv) if t not in api_pts or not close(v, api_pts[t], 0.002, 0.01)]
            missing = [t for t in api_pts if t not in got]
            if bad or missing:
                miss.append(f"{w} {ch} series: {len(got)} points, API {len(api_pts)}; "
                            f"{len(bad)} differ or are not in the API's buckets, {len(missing)} missing "
                            f"(first: {iso((bad or missing)[0])})")
    elif check in ("argmax", "argmin"):
        ch = item["channel"]
        got = answer.get("wells") or []
        firsts = []
        for snap in (before, after):
            xs = [(row["values"][ch], w) for w, row in snap.items() if ch in row["values"]]
            if xs:
                firsts.append((max(xs) if check == "argmax" else min(xs))[1])
        if not got or got[0] not in firsts:
            miss.append(f"answer wells {got[:3]}, the {check[3:]} of {ch} in /wells/latest is {firsts[-1:]}")
    elif check == "acked_alarms":
        want = {a["well_id"] for a in fleet.all_alarms() if a["state"] == "acknowledged"}
        got = set(answer.get("wells") or [])
        if got != want:
            miss.append(f"answer wells {sorted(got)}, acknowledged alarms on {sorted(want)}")
    elif check == "raised_alarms":
        want = {a["well_id"] for a in fleet.all_alarms() if a["state"] == "raised"
                and a["well_id"] in set(fleet.expand(item.get("wells", "all")))}
        got = set(answer.get("wells") or [])
        if got != want:
            miss.append(f"answer wells {sorted(got)}, alarms not acknowledged on {sorted(want)}")
    elif check == "cause":
        # "why did X trip / stop": the answer names what its latest alarm (of any state) says,
        # and every condition still open on it
        w = item["wells"][0]
        mine = sorted((a for a in fleet.all_alarms() if a["well_id"] == w), key=lambda a: a["started_at"])
        want = {a["condition"] for a in mine if a["state"] != "cleared"} | {a["condition"] for a in mine[-1:]}
        text = json.dumps(answer)
        for c in sorted(want):
            if c not in text and c.replace("_", " ") not in text:
                miss.append(f"{c} ({w}'s latest or open alarm) not in the answer")
    elif check in ("open_alarms", "history", "no_alarms", "diagnosis"):
        alarms = fleet.all_alarms()
        cond = item.get("condition")
        scope = set(fleet.expand(item.get("wells", "all")))
        if check == "open_alarms":
            want = {a["well_id"] for a in alarms if a["state"] != "cleared"
                    and (cond is None or a["condition"] == cond) and a["well_id"] in scope}
        elif check == "no_alarms":
            want = scope - {a["well_id"] for a in alarms if a["state"] != "cleared"}
        elif check == "diagnosis":
            w = item["wells"][0]
            conds = {a["condition"] for a in alarms if a["state"] != "cleared" and a["well_id"] == w}
            text = json.dumps(answer)
            for c in conds:
                if c not in text and c.replace("_", " ") not in text:
                    miss.append(f"open {c} alarm of {w} not in the answer")
            return miss
        else:
            f, t = parse_ts(interp.get("from")), parse_ts(interp.get("to"))
            want = set()
            for a in alarms:
                if cond and a["condition"] != cond or a["well_id"] not in scope:
                    continue
                s, e = parse_ts(a["started_at"]), parse_ts(a.get("ended_at"))
                if (t is None or s < t) and (f is None or e is None or e >= f):
                    want.add(a["well_id"])
        got = set(answer.get("wells") or [])
        if got != want:
            miss.append(f"answer wells {sorted(got)}, /alarms says {sorted(want)}")
    return miss


def now_utc():
    return dt.datetime.now(UTC)


# ---------------------------------------------------------------- running

def ask(api, question, timezone=None):
    body = {"question": question}
    if timezone:
        body["timezone"] = timezone
    return api.call("POST", "/api/v1/ask", body)


def suggestions_of(body):
    if not isinstance(body, dict):
        return []
    details = (body.get("error") or {}).get("details") or {}
    return details.get("suggestions") or body.get("suggestions") or []


def run_one(api, fleet, item):
    needs_latest = item.get("check") in ("latest", "filter", "argmax", "argmin")
    before = fleet.latest() if needs_latest else {}
    asked_at = now_utc()
    status, body, secs = ask(api, item["q"], item.get("timezone"))
    after = fleet.latest() if needs_latest else {}
    res = {"id": item["id"], "q": item["q"], "status": status, "secs": secs,
           "tags": item.get("tags", [])}
    if item.get("expect_refusal"):
        res["kind"] = "refuse"
        if status == 422:
            res["outcome"] = "correct"
            res["suggestions"] = suggestions_of(body)
        elif status == 200:
            res["outcome"] = "wrong"
            res["got"] = {"interpretation": body.get("interpretation"),
                          "text": (body.get("answer") or {}).get("text")}
        else:
            res["outcome"] = "error"
            res["got"] = body
        return res
    res["kind"] = item["intent"]
    if status == 422:
        res["outcome"] = "refused"
        sugg = suggestions_of(body)
        res["suggestions"] = sugg
        res["recognised"] = ((body.get("error") or {}).get("details") or {}).get("recognised")
        helpful = []
        for s in sugg:
            st, b, _ = ask(api, s, item.get("timezone"))
            if st == 200 and not judge_interpretation(item, b.get("interpretation") or {}, fleet, now_utc()):
                helpful.append(s)
        res["helpful_suggestions"] = helpful
        return res
    if status != 200:
        res["outcome"] = "error"
        res["got"] = body
        return res
    interp = body.get("interpretation") or {}
    answer = body.get("answer") or {}
    miss = judge_interpretation(item, interp, fleet, asked_at)
    res["interpretation"] = interp
    res["text"] = answer.get("text")
    res["answer"] = {"wells": answer.get("wells"), "values": answer_values(answer)[:20],
                     "series": [{k: (v if not isinstance(v, list) else v[:5] + ["..."] * (len(v) > 5))
                                 for k, v in x.items()} if isinstance(x, dict) else x
                                for x in (answer.get("series") or [])[:5]]}
    if miss:
        res["outcome"] = "wrong"
        res["miss"] = miss
    else:
        res["outcome"] = "correct"
        if item.get("check"):
            amiss = judge_answer(item, interp, answer, fleet, before, after)
            res["answer_checked"] = True
            if amiss:
                res["answer_miss"] = amiss
                # judged on the answer alone: a wrong answer is a wrong interpretation
                if item.get("judge") == "answer":
                    res["outcome"] = "wrong"
    return res


def run_scoped(api, spec):
    """The scoped questions as a user limited to `spec["wells"]` (created with the admin
    credentials the runner signed in with): [(question, status, leaked well ids)]."""
    name = "heldout2-" + os.urandom(4).hex()
    password = "Ho-" + os.urandom(12).hex()
    status, body, _ = api.call("POST", "/api/v1/users", {"name": name, "role": "analyst",
                                                          "password": password, "wells": spec["wells"]})
    if status not in (200, 201):
        return None, f"could not create a scoped user ({status}): {body}"
    user = Api(api.url, name, password)
    user.login()
    scope = set(spec["wells"])
    out = []
    for q in spec["questions"]:
        st, b, _ = ask(user, q)
        leaked = set()
        if st == 200:
            a = b.get("answer") or {}
            ids = set(a.get("wells") or []) | {v.get("well_id") for v in answer_values(a) if v.get("well_id")}
            ids |= set(re.findall(r"[A-Z]+-\d{3}", a.get("text") or ""))
            leaked = ids - scope
        out.append((q, st, sorted(leaked)))
    api.call("DELETE", f"/api/v1/users/{name}")
    return out, None


def report_scoped(rows, err, label):
    if err:
        return f"scoped user: {err}"
    lines = [f"scoped user ({label} only): {len(rows)} questions, "
             f"{sum(1 for _, _, l in rows if l)} answers name wells outside the scope; HTTP "
             + ", ".join(f"{q!r} {st}" for q, st, _ in rows if st != 200)
             + f"; the other {sum(1 for _, st, _ in rows if st == 200)} answered 200"]
    for q, st, leaked in rows:
        if leaked:
            lines.append(f"    LEAK {q!r} (HTTP {st}): {leaked}")
    return "\n".join(lines)


def report(results, show_failures):
    kinds = ["current", "aggregate", "trend", "filter", "rank", "alarms", "diagnosis", "compare", "refuse"]
    lines = ["intent      n  correct  wrong  refused(422)  error  correct%",
             "----------  ---  -------  -----  ------------  -----  --------"]
    tot = {"n": 0, "correct": 0, "wrong": 0, "refused": 0, "error": 0}
    for k in kinds:
        rs = [r for r in results if r["kind"] == k]
        if not rs:
            continue
        c = {o: sum(1 for r in rs if r["outcome"] == o) for o in ("correct", "wrong", "refused", "error")}
        for o in c:
            tot[o] += c[o]
        tot["n"] += len(rs)
        lines.append(f"{k:<10}  {len(rs):>3}  {c['correct']:>7}  {c['wrong']:>5}  {c['refused']:>12}  "
                     f"{c['error']:>5}  {100 * c['correct'] / len(rs):>7.1f}%")
    lines.append(f"{'all':<10}  {tot['n']:>3}  {tot['correct']:>7}  {tot['wrong']:>5}  {tot['refused']:>12}  "
                 f"{tot['error']:>5}  {100 * tot['correct'] / max(tot['n'], 1):>7.1f}%")
    lines.append("(refuse: questions that must get a 422; 'wrong' there = answered instead of refused)")
    tags = sorted({t for r in results for t in r.get("tags", [])})
    if tags:
        lines.append("by tag (answerable and refuse together): " + ", ".join(
            f"{t} {sum(1 for r in results if t in r.get('tags', []) and r['outcome'] == 'correct')}"
            f"/{sum(1 for r in results if t in r.get('tags', []))}" for t in tags))
    checked = [r for r in results if r.get("answer_checked")]
    bad = [r for r in checked if r.get("answer_miss")]
    lines.append(f"answers checked against the structured API: {len(checked)}, "
                 f"agreeing {len(checked) - len(bad)}, disagreeing {len(bad)}")
    refused = [r for r in results if r["outcome"] == "refused"]
    if refused:
        helped = sum(1 for r in refused if r.get("helpful_suggestions"))
        lines.append(f"422 on answerable questions: {len(refused)}; with a suggestion that is understood as "
                     f"meant: {helped}")
    secs = sorted(r["secs"] for r in results)
    if secs:
        lines.append(f"ask latency (HTTP, debug build, shared machine): median {1000 * secs[len(secs) // 2]:.1f} ms, "
                     f"p95 {1000 * secs[min(len(secs) - 1, int(0.95 * len(secs)))]:.1f} ms")
    if show_failures:
        lines.append("")
        for r in results:
            if r["outcome"] == "correct" and not r.get("answer_miss"):
                continue
            lines.append(f"[{r['id']}] {r['outcome'].upper()}  {r['q']!r}  (HTTP {r['status']})")
            for m in r.get("miss", []):
                lines.append(f"    - {m}")
            for m in r.get("answer_miss", []):
                lines.append(f"    - answer: {m}")
            if r["outcome"] == "wrong" and r.get("text"):
                lines.append(f"    answered: {r['text'][:200]}")
            if r["outcome"] == "wrong" and r.get("got"):
                lines.append(f"    answered: {json.dumps(r['got'])[:300]}")
            if r["outcome"] == "refused":
                lines.append(f"    recognised: {json.dumps(r.get('recognised'))[:200]}")
                lines.append(f"    suggestions: {r.get('suggestions')}; understood as meant: "
                             f"{r.get('helpful_suggestions') or 'none'}")
            if r["outcome"] == "error":
                lines.append(f"    {json.dumps(r.get('got'))[:300]}")
    return "\n".join(lines)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(binary, speed, wait_s):
    """An `espwatch demo` on a free port and a fresh data directory, once its replay has caught
    up with the clock: (process, url, password, directory)."""
    d = tempfile.mkdtemp(prefix="ask-heldout2-")
    port = free_port()
    out = open(os.path.join(d, "out.log"), "w")
    err = open(os.path.join(d, "err.log"), "w")
    proc = subprocess.Popen([binary, "demo", "--listen", f"127.0.0.1:{port}", "--data-dir",
                             os.path.join(d, "data"), "--speed", str(speed)], stdout=out, stderr=err)
    deadline = time.time() + wait_s
    password = None
    while time.time() < deadline:
        time.sleep(5)
        if proc.poll() is not None:
            raise RuntimeError(f"the demo exited: see {d}/err.log")
        text = open(os.path.join(d, "out.log")).read()
        m = re.search(r"user demo, password (\S+)", text)
        password = m.group(1) if m else None
        if password and "(live)" in open(os.path.join(d, "err.log")).read():
            return proc, f"http://127.0.0.1:{port}", password, d
    proc.terminate()
    raise RuntimeError("the demo did not catch up with the clock in time")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url")
    ap.add_argument("--user", default="demo")
    ap.add_argument("--password", default=os.environ.get("ESPWATCH_PASSWORD"))
    ap.add_argument("--token", help="a bearer token instead of a sign-in")
    ap.add_argument("--demo", metavar="BIN", help="start `BIN demo` and ask it")
    ap.add_argument("--speed", type=float, default=600.0, help="the demo's replay speed")
    ap.add_argument("--wait", type=float, default=1800.0, help="seconds to wait for the demo to catch up")
    ap.add_argument("--questions", default=os.path.join(HERE, "questions.json"))
    ap.add_argument("--only", help="only questions whose id starts with this (`scoped`: only the "
                    "questions asked as a user limited to some wells)")
    ap.add_argument("--json", help="write every result here")
    ap.add_argument("--failures", action="store_true", help="list every question not answered as meant")
    args = ap.parse_args()

    doc = json.load(open(args.questions))
    items = doc["questions"]
    if args.only:
        items = [i for i in items if i["id"].startswith(args.only)]
    with_scoped = doc.get("scoped") and not args.token and args.only in (None, "scoped")
    proc = demo_dir = None
    try:
        if args.demo:
            proc, url, password, demo_dir = start_demo(args.demo, args.speed, args.wait)
            api = Api(url, args.user, password)
        elif args.token:
            api = Api(args.url, token=args.token)
        else:
            api = Api(args.url, args.user, args.password)
        api.login()
        fleet = Fleet(api)
        results = [run_one(api, fleet, i) for i in items]
        scoped = run_scoped(api, doc["scoped"]) if with_scoped else None
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
            shutil.rmtree(demo_dir, ignore_errors=True)
    print(report(results, args.failures))
    if scoped is not None:
        print()
        print(report_scoped(*scoped, doc["scoped"].get("label", "its wells")))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


if __name__ == "__main__":
    main()
