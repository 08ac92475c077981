"""The Markdown that reproduce_paper.py writes: benchmarks/results/paper_cases.md (``--stages table``) and the model
cards micro3diff/models/<case>.md, from the checkpoint and its rows in benchmarks/results/quality.json
(``--stages cards``)."""
from __future__ import annotations

import json
import shlex

from _bench import REPO, RESULTS, unet_label
from _cases import CASES, DATA_TEXT, calibrate_command
from micro3diff.diffusion.settings import RECOMMENDED, recommended_preset
from micro3diff.metrics import correlation
from quality_report import setting_label

MODELS = REPO / "micro3diff" / "models"


def write_card(case: str, a) -> None:
    """micro3diff/models/<case>.md from the shipped checkpoint and its rows in benchmarks/results/quality.json
    (``a``: reproduce_paper's arguments, for the data paths)."""
    from micro3diff.io.checkpoint import load_checkpoint

    ck = load_checkpoint(case)
    tr, u = ck.training, ck.unet
    params = sum(p.numel() for p in ck.model.parameters())
    size_mib = ck.path.stat().st_size / 2**20
    qpath = RESULTS / "quality.json"
    rows = [r for r in (json.loads(qpath.read_text())["rows"] if qpath.is_file() else [])
            if r["case"] == case and r["model_sha256"] == ck.sha256[:16]]
    auto = next((e for e in json.loads(RECOMMENDED.read_text())["models"].values() if e["sha256"] == ck.sha256), None)

    def is_auto(r: dict) -> bool:
        return auto is not None and r["model_sha256"] == ck.sha256[:16] and r["setting"] == auto["row"] \
            and r["size"] == 64 and r["count"] >= 10

    rows.sort(key=lambda r: not is_auto(r))  # the row behind --preset auto first (m3d models quotes it)
    preset = recommended_preset([ck.sha256])
    auto_text = (f"{preset.steps} steps x {preset.n_harmonize} harmonization passes, "
                 f"{preset.method.upper()}{f' eta {preset.eta:g}' if preset.method == 'ddim' else ''}, "
                 f"{preset.nfe} U-Net calls")
    threads = "one thread" if CASES[case].get("threads", 1) == 1 else f"{CASES[case]['threads']} threads"
    lines = [f"# `{case}`: {CASES[case]['title']}", "",
             "A small 2D v-prediction U-Net with a zero-terminal-SNR noise schedule, trained **on a shared 2-core CPU "
             f"for about {round(tr['train_seconds'] / 600) * 10} minutes** (a time box, not convergence). It is not the paper's model: the paper trains a "
             "much larger U-Net (dim 128, attention; A.1) for 50k GPU steps and samples with T = 1000, n_h = 10.", "",
             "## Data", "", DATA_TEXT[case], "",
             "## How it was made", "",
             "```", tr["command"], "```", "",
             f"* {tr['step']} steps in {tr['train_seconds']} s of wall time ({tr['train_seconds'] / 60:.0f} min) on "
             f"{tr['device']}, {threads}, "
             f"{CASES[case]['trained_beside']}. Run from the repository root; the data step is "
             f"`benchmarks/reproduce_paper.py --stages data`. Training is deterministic on CPU.",
             f"* Shipped weights: the EMA weights of step {tr['step']}, stored as float16 "
             f"({size_mib:.2f} MiB), exported by `benchmarks/reproduce_paper.py --stages ship`.",
             f"* x0-hat moments (the volume-fraction control's variance target), measured on "
             f"{ck.x0_moments.crops if ck.x0_moments else 0} training crops at 64 timesteps by "
             f"`m3d {shlex.join(calibrate_command(case, a))}` (the ship stage runs it).",
             f"* Batch {tr['batch']}, AdamW lr {tr['lr']} (100 warm-up steps), EMA {tr['ema']}, seed {tr['seed']}, "
             f"training crop {ck.data['image_size']} x {ck.data['image_size']}, 8-fold dihedral augmentation, "
             f"schedule {ck.schedule.kind} (betas {ck.schedule.beta_start:g}..{ck.schedule.beta_end:g} rescaled to "
             f"alphabar_T = 0), {ck.schedule.prediction}-prediction, T = {ck.schedule.T}.",
             f"* U-Net (preset `{unet_label(tr.get('preset', 'tiny'), u)}`{f', a {u.stem} x {u.stem} pixel-unshuffle stem' if u.stem > 1 else ''}): dim {u.dim}, dim_mults {list(u.dim_mults)}, attention "
             f"{list(u.attention)}, {u.num_resnet_blocks} resnet block per level, {params / 1e6:.2f} M parameters. "
             f"Fully convolutional: it samples 64^3 (or any multiple of {u.divisor}) volumes.", "",
             "## Use", "", "```", f"m3d sample {case} --size 64 --count 10 -o out/   # --preset auto: {auto_text}",
             f"m3d sample {case} --size 64 --preset preview -o out/      # 49 calls: a quick look", "```", "",
             f"`--preset auto` (the default) runs, for these weights, the setting whose 64^3 x 10 row (the first "
             f"below) met the targets (`micro3diff/models/samplers.json`): {auto_text}.", "",
             "`--volume-fraction auto` (the default) steers every denoiser call to the training data's phase fraction, "
             "x0-hat scaled to the variance the model gives on real images at that noise level; "
             "without it (`--volume-fraction off`) multi-plane sampling erodes the minority phase (see "
             "`benchmarks/results/quality.md`).", ""]
    if rows:
        lines += ["## Measured quality", "",
                  "Rows of `benchmarks/results/quality.md` for this model (error rates eq. 24, %; per volume mean ± sd):",
                  "", "| mode | setting | size x n | calls | phi gen (ref) | S2 | S2 floor | S2 shuffled | L | L floor | "
                  "L shuffled |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m2, ml = r["metrics"]["two_point"], r["metrics"]["lineal_path"]
            lines.append(f"| {r['mode']} | {setting_label(r)}{' (auto)' if is_auto(r) else ''} | {r['size']} x {r['count']} | {r['nfe']} | "
                         f"{r['phi_generated']['mean']:.3f} ({r['phi_reference']:.3f}) | "
                         f"{m2['error_per_volume']['mean']:.1f} ± {m2['error_per_volume']['std']:.1f} | "
                         f"{m2['floor_volume']['mean']:.1f} | {m2['shuffled']:.1f} | "
                         f"{ml['error_per_volume']['mean']:.1f} ± {ml['error_per_volume']['std']:.1f} | "
                         f"{ml['floor_volume']['mean']:.1f} | {ml['shuffled']:.1f} |")
        lines.append("")
    lines += ["## Limitations", "",
              "* Small, briefly trained CPU model; the phase fraction of 3D volumes is held by the volume-fraction "
              "control, not by the model (see the quality table's `off` rows).",
              "* Trained on 2D data only; the third dimension comes from the multi-plane harmonized sampler "
              "(paper Algorithm 1), which assumes an isotropic material.", ""]
    (MODELS / f"{case}.md").write_text("\n".join(lines))
    print(f"wrote {MODELS / f'{case}.md'}", flush=True)


NOTES = [
    "## How to read this",
    "",
    "* Error rate (eq. 24): 100 * sum_r |f_gen(r) - f_ref(r)| / sum_r f_ref(r), r = 0..half the volume side.",
    "  *Per volume*: each volume's curve against the reference (mean ± sd over volumes). *Mean curve*: the",
    "  mean curve of all volumes against the reference (the paper averages its curves over 25 volumes).",
    "* Case I uses 3D metrics against the 3D training volume; cases II and IV use 2D metrics averaged over all",
    "  slices of the three orthogonal planes against the mean curve of the 2D training images",
    "  (``micro3diff.metrics.protocol``).",
    "* Natural-variability floor: the same error for real data of the generated size, the best a perfect",
    "  generator could expect. Case I: crops of the reference volume of the volumes' size. Cases II/IV: the mean",
    "  curve of a volume's worth (3 x S) of real S x S images/crops, as the generated curve averages 3 x S slices",
    "  (drawn from the same images as the reference, so slightly optimistic). Shuffled baseline: the reference's",
    "  pixels permuted (right volume fraction, no structure); a generator near it learned nothing but the",
    "  volume fraction.",
    "* The shipped models are small CPU models, not the paper's (its U-Net has dim 128 and attention, 50k GPU",
    "  steps, T = 1000, n_h = 10); their model cards say how they were trained.",
]


def paper_cases_lines(evals: list[dict], command: str, date: str, device: str) -> list[str]:
    """paper_cases.md: one row per (case, sampler setting, metric), the models and volume fractions, the commands."""
    def pm(s: dict) -> str:
        return f"{s['mean']:.2f} ± {s['std']:.2f}"

    lines = ["# Paper cases I, II, IV: error rates of Micro3Diff reproductions (eq. 24, %)", "",
             f"Table written by `{command}` on {date}; {device}. The commands that sampled and "
             f"evaluated each row are listed below the table.", "",
             "| case | metric | sampler | volumes | ours: per volume (mean ± sd) | ours: mean curve | paper (Fig. 8) | "
             "natural-variability floor | shuffled baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for e in evals:
        s = e["sampler"]
        for n, m in e["metrics"].items():
            lines.append(f"| {e['case']} ({e['mode'].upper()}) | {correlation.LABELS[n]} | {e['setting']}: {s['method']}, {s['steps']} steps, "
                         f"n_h={s['n_harmonize']} | {e['volumes']} x {e['volume_shape'][0]}^3 | "
                         f"{pm(m['error_per_volume'])} | {m['error_of_mean_curve']:.2f} | {m['paper']:.2f} | "
                         f"{pm(m['floor_volume'])} | {m['shuffled']:.2f} |")
    lines += ["", "| case | sampler | model | volume fraction: reference | generated | seconds per volume |",
              "|---|---|---|---|---|---|"]
    for e in evals:
        s, tr, u = e["sampler"], e["model"]["training"], e["model"]["unet"]
        lines.append(f"| {e['case']} | {e['setting']}: {s['method']}, {s['steps']} steps, n_h={s['n_harmonize']}, "
                     f"{s['nfe']} U-Net calls | shipped `{e['case']}` (U-Net dim {u['dim']}, mults "
                     f"{','.join(map(str, u['dim_mults']))}; {tr.get('step')} steps, {tr.get('train_seconds')} s CPU) | "
                     f"{e['phi_reference']:.3f} | {pm(e['phi_generated'])} | {pm(e['sample_seconds'])} |")
    lines += ["", "Commands (from the repository root; each stage skips finished work):", "", "```"]
    lines += sorted({e.get("command", "") for e in evals} | {command}) + ["```", ""]
    lines += NOTES
    return lines
