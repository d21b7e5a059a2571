"""RNA-seq targets: the 138-gene panel, expression tables, log2(1+x), TCGA barcodes, joins, splits.

Tables are pandas DataFrames with one row per sample or patient (the index) and one column per
gene (current HGNC symbols). Raw values are RSEM-normalised counts; the paper's targets are
log2(1 + x) (section 2.3.3).
"""

from __future__ import annotations

import csv
import logging
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from hist2rna_tf.atomic import atomic_path
from hist2rna_tf.barcodes import TCGA_SAMPLE, patient_id
from hist2rna_tf.config import PAM50_LABEL_COLUMN
from hist2rna_tf.errors import ExpressionError, Hist2RNAError

log = logging.getLogger(__name__)

ASSAYS = {"oncotype": "Oncotype DX", "mammaprint": "Mammaprint", "pam50": "Prosigna/PAM50",
          "prosigna": "Prosigna/PAM50", "endopredict": "EndoPredict", "bci": "BCI", "mammostrat": "Mammostrat"}


def read_table_file(path: str | Path, error: type[Hist2RNAError] = ExpressionError, **options) -> pd.DataFrame:
    """A CSV or tab-separated file (the delimiter sniffed unless `sep` is given) with at least one
    row, or one `error` naming the file and what is wrong with it (missing, empty, not a table)."""
    path = Path(path)
    options = {"sep": None, "engine": "python", **options}
    try:
        if path.stat().st_size == 0:
            raise error(f"{path}: the file is empty; expected a CSV or tab-separated table with a header row.")
        table = pd.read_csv(path, **options)
    except (OSError, UnicodeDecodeError, csv.Error, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise error(f"{path}: not a readable CSV/TSV table ({type(exc).__name__}: {exc}).") from None
    if table.empty:
        raise error(f"{path}: has a header but no rows.")
    return table


# --- the gene panel -------------------------------------------------------------------------------


def panel_table() -> pd.DataFrame:
    """The shipped panel: gene (current symbol), assays (';'-separated), assay_symbol (older alias)."""
    with resources.files("hist2rna_tf").joinpath("data", "hist2rna_138_genes.csv").open() as handle:
        return pd.read_csv(handle, dtype=str, keep_default_na=False)


def alias_map() -> dict[str, str]:
    """Older symbol (as in the assay lists) -> current symbol, for every gene that was renamed."""
    table = panel_table()
    return {row.assay_symbol: row.gene for row in table.itertuples() if row.assay_symbol}


# `--genes`: the paper's 138 (the default), or every gene of the expression table (the whole transcriptome).
PANEL, ALL_GENES = "panel", "all"


def load_panel(selection: str = PANEL) -> list[str]:
    """Genes, in panel order: `panel` (the 138), an assay (`pam50`, `oncotype`, ...), or a file of symbols
    (one per line, or a CSV with a `gene` column); older symbols in a file are mapped to current ones.
    (`all`, every gene of a table, is the table's: `run_genes`.)"""
    table = panel_table()
    key = selection.lower()
    if key == ALL_GENES:
        raise ExpressionError("gene selection 'all' is every gene of an expression table; give the table "
                              "(run_genes), or 'panel' for the paper's 138.")
    if key == PANEL:
        return table["gene"].tolist()
    if key in ASSAYS:
        return [g for g, assays in zip(table["gene"], table["assays"]) if ASSAYS[key] in assays.split(";")]
    path = Path(selection)
    if not path.exists():
        raise ExpressionError(f"--genes {selection!r}: not 'panel', 'all', an assay ({', '.join(sorted(ASSAYS))}) "
                              "or an existing file of gene symbols (no such file).")
    aliases = alias_map()
    symbols = [aliases.get(g, g) for g in read_gene_file(path)]
    genes = list(dict.fromkeys(symbols))
    if len(genes) < len(symbols):
        log.warning("%s: %d gene(s) listed more than once (e.g. %s), counted once.", path, len(symbols) - len(genes),
                    repeated(symbols)[0])
    return genes


def read_gene_file(path: str | Path, option: str = "--genes") -> list[str]:
    """The gene symbols of a text file, one a line (or a CSV whose first column is headed `gene`), in
    the file's order, repeats kept (the caller decides what one means); an ExpressionError naming the
    file, what is wrong (missing, a folder, not text, no symbol) and what `option` takes."""
    path = Path(path)
    takes = f"{option} takes a text file of gene symbols, one a line"
    if not path.exists():
        raise ExpressionError(f"{option} {path}: no such file; {takes}.")
    if path.is_dir():
        raise ExpressionError(f"{option} {path}: a folder; {takes}.")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ExpressionError(f"{option} {path}: not a text file (binary content); {takes}.") from None
    except OSError as exc:
        raise ExpressionError(f"{option} {path}: unreadable ({exc.strerror}); {takes}.") from None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].split(",")[0].strip().lower() == "gene":
        lines = [line.split(",")[0].strip() for line in lines[1:]]
    if not lines:
        raise ExpressionError(f"{option} {path}: lists no genes; {takes}.")
    return lines


def repeated(names: list[str]) -> list[str]:
    """The names listed more than once, in order of first repeat (pandas' `duplicated`)."""
    index = pd.Index(names)
    return list(dict.fromkeys(index[index.duplicated()]))


# --- reading tables -------------------------------------------------------------------------------


def read_expression(path: str | Path) -> pd.DataFrame:
    """An RNA-seq table as samples x genes (raw values, gene columns by current symbol).

    Accepts cBioPortal's layout (rows = genes with a `Hugo_Symbol` column, optional
    `Entrez_Gene_Id`, one column per sample barcode), tidy tables (rows = patients or samples,
    the first column their id, then one column per gene) and their transpose (rows = genes, the
    first column their symbol, as hoadley-lab/pam50 and GEO series tables are), told apart by where
    the panel's genes are; as CSV or tab-separated text.
    """
    path = Path(path)
    table = read_table_file(path)
    if table.shape[1] < 2:
        raise ExpressionError(f"{path}: needs an id column and at least one value column.")
    if "Hugo_Symbol" in table.columns:
        table = _from_cbioportal(table, path)
    else:
        table = table.set_index(table.columns[0])
        table.index = table.index.astype(str)
        if _genes_in_rows(table):
            table = table.T
    table = table.rename(columns=alias_map())
    # pandas renames a repeated header "X" to "X.1": find the originals it renamed.
    twice = sorted({str(c).rsplit(".", 1)[0] for c in table.columns
                    if re.fullmatch(r"(.+)\.\d+", str(c)) and str(c).rsplit(".", 1)[0] in table.columns})
    if twice:
        raise ExpressionError(f"{path}: gene columns appear twice ({', '.join(twice)}); keep one column per gene.")
    values = numeric_values(table, path)
    if values.columns.duplicated().any():
        dupes = sorted(set(values.columns[values.columns.duplicated()]))
        raise ExpressionError(f"{path}: genes appear twice (after mapping old symbols): {', '.join(dupes)}.")
    return values


def numeric_values(table: pd.DataFrame, path: str | Path) -> pd.DataFrame:
    """The table as numbers (an empty cell: NaN), or an ExpressionError naming the first cell that is text:
    its value, row and column."""
    values = table.apply(pd.to_numeric, errors="coerce")
    bad = values.isna() & table.notna()
    if bad.any().any():
        column = bad.any().idxmax()
        row = bad.index[bad[column].to_numpy()][0]
        raise ExpressionError(f"{path}: non-numeric value {table.loc[row, column]!r} in row {row!r}, column "
                              f"{column!r}; expected numbers.")
    return values


def _genes_in_rows(table: pd.DataFrame) -> bool:
    """Whether the row ids, rather than the columns, are the panel's gene symbols."""
    aliases = alias_map()
    known = set(panel_table()["gene"])

    def hits(names) -> int:
        return sum(aliases.get(str(n), str(n)) in known for n in names)

    return hits(table.index) > hits(table.columns)


def _from_cbioportal(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    table = table.drop(columns=[c for c in ("Entrez_Gene_Id",) if c in table.columns])
    table = table.dropna(subset=["Hugo_Symbol"])
    if table["Hugo_Symbol"].duplicated().any():
        # cBioPortal repeats a symbol for several Entrez ids; keep the first, as its own portal does.
        log.info("%s: %d duplicated gene symbols; the first row of each is kept.", path,
                 int(table["Hugo_Symbol"].duplicated().sum()))
        table = table.drop_duplicates(subset="Hugo_Symbol")
    out = table.set_index("Hugo_Symbol").T
    out.index = out.index.astype(str)
    out.columns.name = None
    return out


def run_genes(selection: str, table: pd.DataFrame, source) -> list[str]:
    """The genes a run predicts: `load_panel(selection)`, or with `all` every gene of `table` (in its
    order), refused when the table has fewer than the paper's panel (the whole transcriptome was meant:
    TCGA's RSEM table has 20,531)."""
    if selection.lower() != ALL_GENES:
        return load_panel(selection)
    genes = [str(g) for g in table.columns]
    if len(genes) < len(panel_table()):
        raise ExpressionError(f"{source}: --genes all takes every gene of the table, and it has {len(genes)} "
                              f"({', '.join(genes[:5])}); give the whole RNA-seq table (TCGA's RSEM: 20,531 genes), or "
                              "--genes panel (the paper's 138), an assay or a file of genes.")
    return genes


def select_genes(table: pd.DataFrame, genes: list[str], drop_missing: bool = False,
                 source: str = "expression table") -> tuple[pd.DataFrame, list[str]]:
    """The table's columns for `genes`, in that order, and the genes it lacks.

    Missing genes are an error listing them, unless `drop_missing` (then they are returned, for the
    run to record).
    """
    missing = [g for g in genes if g not in table.columns]
    if missing and not drop_missing:
        raise ExpressionError(f"{source}: {len(missing)} of {len(genes)} genes missing: {', '.join(missing)}. "
                              "Use a table that has them, or --drop-missing-genes to train without them.")
    kept = [g for g in genes if g in table.columns]
    if not kept:
        raise ExpressionError(f"{source}: none of the {len(genes)} genes asked for (e.g. {', '.join(genes[:3])}) is in "
                              f"the table, whose columns are e.g. {', '.join(map(str, table.columns[:3]))}; give genes "
                              "the table has (current HGNC symbols), or the table that has them.")
    return table[kept], missing


def refuse_non_finite(table: pd.DataFrame, source, cell: str, raw: pd.DataFrame,
                      fix: str = "fill or drop it (the patient or the gene), then train again") -> None:
    """An ExpressionError naming the first NaN or inf cell of `table` (its value as `raw` has it) and how many
    there are: the paper's loss cannot learn from them."""
    bad = ~np.isfinite(table.to_numpy(np.float64))
    if not bad.any():
        return
    r, c = np.argwhere(bad)[0]
    row, column = table.index[r], table.columns[c]
    value = raw.loc[row, column] if row in raw.index and column in raw.columns else table.iloc[r, c]
    where = cell.format(row=repr(row), column=repr(column))
    raise ExpressionError(f"{source}: {where} is not a finite number ({value}); {int(bad.sum())} cells are NaN or inf "
                          f"in all. {fix[0].upper() + fix[1:]}.")


def log2_expression(table: pd.DataFrame, source: str = "expression table", missing_ok: bool = False) -> pd.DataFrame:
    """log2(1 + x) of raw RSEM values; negative values are refused, logged-looking tables warned about.
    A missing value (NaN) is refused (training targets need every one), or, with `missing_ok`, stays
    missing (subtype calls handle them sample by sample)."""
    values = table.to_numpy(dtype=float)
    if np.isnan(values).any() and not missing_ok:
        where = table.columns[np.isnan(values).any(axis=0)][:5]
        first = table.index[np.isnan(values).any(axis=1)][0]
        raise ExpressionError(f"{source}: missing values (NaN) in {', '.join(map(str, where))} (e.g. sample "
                              f"{first!r}; {int(np.isnan(values).sum())} in all); fill or drop those samples first.")
    if (values < 0).any():
        raise ExpressionError(f"{source}: negative values (min {np.nanmin(values):.3g}); log2(1+x) needs raw, "
                              "non-negative RSEM values. Is the table already logged or z-scored?")
    if np.nanmax(values, initial=0.0) < 30:
        log.warning("%s: the largest value is %.3g; raw RSEM reaches thousands. Is it already logged? "
                    "log2(1+x) is applied regardless (a logged table, e.g. `hist2rna predict`'s genes: `hist2rna subtype` takes "
                    "--no-log; training needs raw RSEM).", source, np.nanmax(values, initial=0.0))
    return np.log2(1.0 + table.astype(float))


# --- patients, joins, splits ----------------------------------------------------------------------


def to_patients(table: pd.DataFrame, source: str = "expression table") -> pd.DataFrame:
    """Rows keyed by patient: TCGA samples reduced to primary tumours (sample type 01) and averaged
    per patient; non-TCGA ids are kept as they are."""
    ids = pd.Series(table.index, index=table.index)
    sample_type = ids.str.extract(TCGA_SAMPLE)[1]
    keep = sample_type.isna() | (sample_type == "01")
    dropped = int((~keep).sum())
    if dropped:
        log.info("%s: %d non-primary-tumour samples (type != 01) left out.", source, dropped)
    table = table[keep.to_numpy()]
    patients = [patient_id(i) for i in table.index]
    counts = pd.Series(patients).value_counts()
    repeated = sorted(counts.index[counts > 1])
    if repeated:
        log.warning("%s: %d patients have several primary-tumour samples, averaged: %s%s.", source, len(repeated),
                    ", ".join(repeated[:10]), ", ..." if len(repeated) > 10 else "")
    return table.groupby(patients, sort=True).mean()


def stratified_split(labels: pd.Series, test_fraction: float = 160 / 495, seed: int = 0) -> pd.Series:
    """'train' or 'test' per patient, stratified by label (the paper: 335/160 of 495, ~32% test).

    Deterministic under `seed`; every label with at least two patients has both subsets.
    """
    if labels.isna().any():
        raise ExpressionError(f"{int(labels.isna().sum())} patients have no subtype label; drop them first.")
    rng = np.random.default_rng(seed)
    subset = pd.Series("train", index=labels.index, name="subset")
    for label in sorted(labels.unique()):
        members = np.array(sorted(labels.index[labels == label]))
        n_test = int(round(len(members) * test_fraction))
        if len(members) >= 2:
            n_test = min(max(n_test, 1), len(members) - 1)
        subset[rng.permutation(members)[:n_test]] = "test"
    return subset


def validation_rows(n_rows: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the training rows held back for validation (at least one, seeded)."""
    n_val = max(1, int(round(n_rows * fraction))) if fraction > 0 else 0
    mask = np.zeros(n_rows, bool)
    mask[np.random.default_rng(seed).permutation(n_rows)[:n_val]] = True
    return mask


def save_split(split: pd.Series, labels: pd.Series, path: str | Path, sites: pd.Series | None = None) -> Path:
    """patient_id, subset (train/test), label[, site: each patient's, blank where unknown]."""
    frame = pd.DataFrame({"patient_id": split.index, "subset": split.values, "label": labels.reindex(split.index).values})
    if sites is not None:
        frame["site"] = sites.reindex(split.index).values
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return Path(path)


def load_split(path: str | Path) -> pd.Series:
    """A split saved by `save_split` (patient_id, subset[, label]) as a Series of 'train'/'test'."""
    path = Path(path)
    frame = read_table_file(path, sep=",", dtype=str)
    if not {"patient_id", "subset"} <= set(frame.columns):
        raise ExpressionError(f"{path}: a split file needs columns patient_id and subset.")
    if not frame["subset"].isin(["train", "test"]).all():
        raise ExpressionError(f"{path}: subset must be 'train' or 'test'.")
    return frame.set_index("patient_id")["subset"]


def read_labels(path: str | Path, column: str = PAM50_LABEL_COLUMN, id_column: str | None = None) -> pd.Series:
    """One label per patient from a clinical table (e.g. the PAM50 subtype), indexed by patient id."""
    path = Path(path)
    table = read_table_file(path, dtype=str)
    if column not in table.columns:
        raise ExpressionError(f"{path}: no column {column!r} (columns: {', '.join(table.columns)}).")
    ids = table[id_column or table.columns[0]].map(patient_id)
    labels = table[column].replace("", np.nan)
    labels.index = ids
    labelled = labels.dropna()
    conflicting = sorted(i for i, values in labelled.groupby(level=0) if values.nunique() > 1)
    if conflicting:  # the same label twice (several slides or samples of a patient) is fine
        raise ExpressionError(f"{path}: patients with conflicting {column!r} labels: {', '.join(conflicting[:10])}"
                              f"{', ...' if len(conflicting) > 10 else ''}; keep one label per patient.")
    labels = labels.groupby(level=0, sort=False).first()  # a patient's label wherever it is given
    return labels.rename(column)


def average_by_patient(slide_features: pd.DataFrame, patient_ids: pd.Series) -> pd.DataFrame:
    """Per-patient features: the mean over a patient's slides (said in the log when it happens)."""
    counts = patient_ids.value_counts()
    several = counts[counts > 1]
    if len(several):
        log.info("%d patients have several slides; their slide features are averaged (e.g. %s: %d slides).",
                 len(several), several.index[0], int(several.iloc[0]))
    return slide_features.groupby(patient_ids.reindex(slide_features.index).to_numpy(), sort=True).mean()


def join_patients(features: pd.DataFrame, targets: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Rows of (features, targets) for the patients both have, in the same order, and a report of
    what did not match (never dropped silently)."""
    common = sorted(set(features.index) & set(targets.index))
    report = {"matched": len(common),
              "features_without_expression": sorted(set(features.index) - set(targets.index)),
              "expression_without_features": sorted(set(targets.index) - set(features.index))}
    if not common:
        raise ExpressionError("no patient has both slide features and expression: check that both use the same "
                              f"ids (e.g. features {list(features.index[:3])}, expression {list(targets.index[:3])}).")
    return features.loc[common], targets.loc[common], report
