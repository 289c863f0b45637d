#!/usr/bin/env python3
"""Render modules/tailjoin-unit.json into a systemd unit file, the way NixOS renders a unit.

    render-unit.py UNIT_JSON [--set SECTION.KEY=VALUE ...] [-o OUT]

Sections unit/service/install become [Unit]/[Service]/[Install]; keys are written in sorted
order (as NixOS does); a list becomes one line per element, a boolean true/false, a number its
decimal form, and an empty string an empty assignment (`Key=`). `_comment` is dropped.
`--set` adds instance settings (ExecStart=, LoadCredential=, ...); a repeated key becomes a
list, and a key already in the JSON gets the new value appended after the JSON's.
"""

import argparse
import json
import sys

SECTIONS = (("unit", "Unit"), ("service", "Service"), ("install", "Install"))


def value_text(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        return v
    raise SystemExit(f"render-unit.py: unsupported value {v!r}")


def render(spec):
    out = []
    for key, title in SECTIONS:
        attrs = spec.get(key, {})
        if not isinstance(attrs, dict):
            raise SystemExit(f"render-unit.py: section {key!r} is not an object")
        out.append(f"[{title}]\n")
        for name in sorted(attrs):
            v = attrs[name]
            for item in v if isinstance(v, list) else [v]:
                out.append(f"{name}={value_text(item)}\n")
        out.append("\n")
    return "".join(out)[:-1]  # no blank line after the last section


def apply_sets(spec, sets):
    titles = {title.lower(): key for key, title in SECTIONS}
    for s in sets:
        where, sep, v = s.partition("=")
        section, dot, name = where.partition(".")
        if not sep or not dot or section.lower() not in titles or not name:
            raise SystemExit(f"render-unit.py: --set wants SECTION.KEY=VALUE, got {s!r}")
        attrs = spec.setdefault(titles[section.lower()], {})
        if name in attrs:
            old = attrs[name]
            attrs[name] = (old if isinstance(old, list) else [old]) + [v]
        else:
            attrs[name] = v


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unit_json")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("-o", "--output")
    a = ap.parse_args(argv)
    with open(a.unit_json, encoding="utf-8") as f:
        spec = json.load(f)
    spec.pop("_comment", None)
    unknown = set(spec) - {k for k, _ in SECTIONS}
    if unknown:
        raise SystemExit(f"render-unit.py: unknown sections {sorted(unknown)}")
    apply_sets(spec, a.set)
    text = render(spec)
    if a.output:
        with open(a.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
