"""Assemble BENCHMARKS.md from the sections the benchmark scripts write to benchmarks/*.md."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORDER = ["foundation", "runner", "channels", "prune_digits", "compress", "distill", "nas",
         "recipes_seeds", "devices", "emulated_pi", "tasks", "latency", "adapt"]


def main() -> None:
    parts = {p.stem: p.read_text().strip() for p in sorted((ROOT / "benchmarks").glob("*.md"))}
    names = [n for n in ORDER if n in parts] + sorted(set(parts) - set(ORDER))
    head = ("# Benchmarks\n\nEvery number here was measured on this project's machine kind (2 cores, "
            "no GPU) by the script named in its section; each section's first lines give the "
            "command. Timings on a shared machine are noisy: compare the ratios, which were "
            "measured side by side (interleaved) in one run.\n")
    (ROOT / "BENCHMARKS.md").write_text(head + "\n" + "\n\n".join(parts[n] for n in names) + "\n")


if __name__ == "__main__":
    main()
