"""Small real subsets for tests that only need a few images to run a stage end to end."""


def few_rows(manifest, tmp_path, per_class=4):
    """The first ``per_class`` rows of each split and class of a real manifest (paths kept absolute)."""
    header, *rows = manifest.read_text().splitlines()
    kept, seen = [header], {}
    for row in rows:
        path, label, split = row.split(",")
        if seen.setdefault((split, label), 0) < per_class:
            seen[(split, label)] += 1
            kept.append(f"{manifest.parent / path},{label},{split}")
    out = tmp_path / "few" / "labels.csv"
    out.parent.mkdir()
    out.write_text("\n".join(kept) + "\n")
    return out
