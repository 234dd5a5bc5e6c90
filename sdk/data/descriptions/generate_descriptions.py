"""Write a descriptions file for ``clipsam --descriptions FILE`` with any LLM, offline from clipsam (stdlib only).

    python generate_descriptions.py --classes "cat, sofa, floor" --llm "ollama run llama3" --out mine.json
    python generate_descriptions.py --class-file classes.txt --llm "llm -m gpt-4o-mini" --n 15 --out mine.json
    python generate_descriptions.py --classes "cat, sofa" --print-prompts      # paste into any chat UI instead

For each class the prompt below goes to the LLM command on stdin; its answer is read as a JSON list of strings or,
failing that, one sentence per line (bullets and numbering stripped). The output is ``{class: [sentence, ...]}``,
the format clipsam reads (a class file's first synonym on each line is the class name). Read the result before
using it: clipsam never calls an LLM at run time, and what you ship is what it encodes.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys

PROMPT = (
    "Write {n} short, visual descriptions of a {name} as it appears in everyday photographs, one per line, each a "
    "single sentence under 20 words starting with a lowercase article (a/an/the). Describe shape, parts, colours, "
    "materials, typical surroundings and poses; do not name other object classes as the subject. Output only the "
    "{n} lines."
)


def parse_answer(text: str) -> list[str]:
    """An LLM answer -> sentences: a JSON list of strings, else non-empty lines without bullets or numbers."""
    try:
        data = json.loads(text)
        if isinstance(data, list) and all(isinstance(s, str) for s in data):
            return [s.strip() for s in data if s.strip()]
    except json.JSONDecodeError:
        pass
    lines = (re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s*", "", ln).strip() for ln in text.splitlines())
    return [ln for ln in lines if ln]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--classes", help='comma-separated class names, e.g. "cat, sofa, floor"')
    src.add_argument("--class-file", help="clipsam class file: one class per line (first synonym = class name)")
    p.add_argument(
        "--llm", help="command that reads a prompt on stdin and prints the answer (e.g. 'ollama run llama3')"
    )
    p.add_argument("--n", type=int, default=12, help="descriptions per class (default: 12; clipsam ships 10-12)")
    p.add_argument("--out", help="output JSON file")
    p.add_argument("--print-prompts", action="store_true", help="print the prompts and exit (no LLM call)")
    args = p.parse_args(argv)
    if args.classes:
        names = [c.strip() for c in args.classes.split(",") if c.strip()]
    else:
        with open(args.class_file, encoding="utf-8") as f:
            names = [ln.split(", ")[0].strip() for ln in f if ln.strip()]
    if args.print_prompts:
        for name in names:
            print(f"## {name}\n{PROMPT.format(n=args.n, name=name)}\n")
        return 0
    if not (args.llm and args.out):
        p.error("--llm and --out are needed unless --print-prompts")
    out = {}
    for name in names:
        answer = subprocess.run(
            shlex.split(args.llm), input=PROMPT.format(n=args.n, name=name), text=True, capture_output=True, check=True
        ).stdout
        out[name] = parse_answer(answer)[: args.n]
        print(f"{name}: {len(out[name])} descriptions", file=sys.stderr)
        if not out[name]:
            print(f"warning: no descriptions parsed for {name!r}; answer was: {answer[:200]!r}", file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in out.items() if v}, f, indent=1, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
