# Shared helpers: config validation, paths, metric names and resource mapping.
import os
import sys
import re

from lipsim.cli._args import config_argv
from lipsim.configcheck import (
    file_number,
    split_objective,
    sweep_teachers,
    teacher_section,
    validate_config,
)
from lipsim.provenance import config_hash
from lipsim.registry import ATTACKS_TABLE, METRICS_TABLE, names, needs_weights

# Our validator lists every invalid key at once (snakemake's stops at the first).
validate_config(config, workflow.source_path("../schemas/config.schema.yaml"))

# Jobs run `python -m lipsim`: default to the interpreter that runs snakemake (its venv), so
# `.venv/bin/snakemake` works without activating the venv; `--sdm conda` puts its env first.
_BIN = os.path.dirname(sys.executable)
if os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

# `--sdm conda`: envs/lipsim.post-deploy.sh installs the package from this checkout (snakemake
# copies the env file alone, so the env file cannot point at the repository itself).
# (set, not read: update() keeps `snakemake --lint` from asking for an envvars: declaration)
os.environ.update(LIPSIM_SOURCE=os.path.dirname(os.path.abspath(workflow.basedir)))

R = f"{config['results_dir']}/{config['run']}"
# Beyond the paper: sound vs authors' radii (where cosine is certified) and the objectives study.
BEYOND = (("radii",) if "cosine" in config["certify"]["metrics"] else ()) + (
    ("study",) if config["study"]["objectives"] else ()
)
# The final tables and figures: folder -> (formats, report category, label, names).
# The report shows html and png inline, so they come first; the other formats are downloads.
REPORT_FILES = {
    "tables": (
        ("html", "csv", "md", "tex", "parquet"),
        "Tables",
        "table",
        ("table1", "table2", "retrieval")
        + (("bapps",) if config["bapps"]["enabled"] else ())
        + BEYOND,
    ),
    "figures": (("png", "pdf"), "Figures", "figure", ("fig3a", "fig3b", "margins") + BEYOND),
}
# The hash `lipsim manifest` and `lipsim provenance` compute for the same config.
CONFIG_HASH = config_hash(config)


def fmt(x):
    """One spelling per number in file names: 0.5, 2, 0.25 (never 0.50 or 2.0)."""
    return file_number(x)


MARGINS = [fmt(m) for m in config["margins"]]
PRIMARY = f"margin{fmt(config['primary_margin'])}"
MODELS = ["pretrained"] + [f"margin{m}" for m in MARGINS]
TEACHER = config["teacher"]["name"]
# The teacher sweep (Table 1): every teacher's own cache, distillation and finetunes. Models of
# the primary teacher keep their plain ids (pretrained, margin0.5); the others' are
# "{teacher}/{model}", so their files sit in a folder per teacher (R/checkpoints/{teacher}/).
SWEEP = sweep_teachers(config)
OTHER_TEACHERS = [t for t in SWEEP if t != TEACHER]


def model_id(teacher, model):
    return model if teacher == TEACHER else f"{teacher}/{model}"


def model_teacher(mid):
    """(teacher, model) of a model id: 'dino_vitb16/margin0.5' -> ('dino_vitb16', 'margin0.5')."""
    teacher, _, model = mid.rpartition("/")
    return teacher or TEACHER, model


def teacher_prefix_re(teachers):
    """Regex of the optional '{teacher}/' part of model ids, for wildcard constraints."""
    if not teachers:
        return ""
    return "(?:(?:" + "|".join(re.escape(t) for t in teachers) + ")/)?"


# Every LipSim model of the sweep (Table 1, the margins figure), primary teacher first.
SWEEP_MODELS = [model_id(t, m) for t in SWEEP for m in MODELS]


# ---- finetuning objectives compared at equal margins (study.objectives) -------------------
def model_objective(mid):
    """(loss, metric) a model is finetuned with: its id's LOSS-METRIC suffix (margin0.5-
    hinge_sound-cosine), else the run's own (finetune.loss of its teacher, metric)."""
    teacher, model = model_teacher(mid)
    suffix = model.partition("-")[2]
    if suffix:
        return split_objective(suffix)
    return teacher_section(config, "finetune", teacher)["loss"], config["metric"]


def objective_model(margin, objective):
    """Model id of the primary teacher's model at `margin` finetuned with `objective`; the
    run's own objective is the plain margin model (trained once)."""
    own = "-".join(model_objective(f"margin{margin}"))
    return f"margin{margin}" if objective == own else f"margin{margin}-{objective}"


OBJECTIVES = config["study"]["objectives"]
STUDY_MODELS = {o: [objective_model(m, o) for m in MARGINS] for o in OBJECTIVES}
EXTRA_MODELS = [mid for ms in STUDY_MODELS.values() for mid in ms if mid not in MODELS]
# The optional objective suffix of model ids, for wildcard constraints.
OBJECTIVE_RE = f"(?:-(?:{'|'.join(re.escape(o) for o in OBJECTIVES)}))?" if OBJECTIVES else ""


# ---- released checkpoints (rules/released.smk fetches them) -------------------------------
def released_path(name):
    """Where the fetch_released rule puts the authors' checkpoint `name` (pretrained, 0.5)."""
    model = name if name == "pretrained" else f"margin{fmt(name)}"
    return f"{R}/released-checkpoints/{model}.pth"


def checkpoint_source(name, value):
    """A pretrained_checkpoint / finetuned_checkpoints value: a path, or 'released'."""
    return released_path(name) if value == "released" else value


RELEASED = config["released"]


def released_key(model):
    """Key of `released.ids` / `released.sha256` for a model name (pretrained, margin0.5)."""
    if model == "pretrained":
        return "pretrained"
    margin = float(model[len("margin") :])
    for key in RELEASED["ids"]:
        if key != "pretrained" and float(key) == margin:
            return key
    raise WorkflowError(f"released.ids has no Drive id for margin {margin:g} ({model})")


def released_option(section, option):
    return lambda wc: (
        f"--{option} {RELEASED[section][released_key(wc.model)]}"
        if released_key(wc.model) in RELEASED[section]
        else ""
    )


PRETRAINED_SRC = config["pretrained_checkpoint"] and checkpoint_source(
    "pretrained", config["pretrained_checkpoint"]
)
IMPORTED = {fmt(k): checkpoint_source(k, v) for k, v in config["finetuned_checkpoints"].items()}


# ---- data locations -------------------------------------------------------------------
def night_dir():
    if config["night"]["source"] == "path":
        return config["night"]["path"]
    return f"{R}/data/night"


def night_inputs(wildcards=None):
    """The NIGHT folder plus the verification report that must pass before evaluation."""
    return {"night": night_dir(), "verified": f"{R}/checks/night-verified.json"}


def imagenet_dir():
    if config["imagenet"]["source"] == "path":
        return config["imagenet"]["path"]
    return f"{R}/data/imagenet"


def natural_dir():
    if config["natural_images"]["source"] == "path":
        return config["natural_images"]["path"]
    return f"{R}/data/natural"


def bapps_dir():
    return BAPPS["path"] if BAPPS["source"] == "path" else f"{R}/data/bapps"


def generated(path):
    """Inputs that exist only when the pipeline makes them (user folders are params)."""
    return [path] if path.startswith(f"{R}/") else []


# ---- metrics --------------------------------------------------------------------------
def ckpt_path(model):
    return f"{R}/checkpoints/{model}.pt"


def metric_spec(metric):
    """Metric name in file names -> spec understood by lipsim.factory.build_metric."""
    if metric.startswith("lipsim-"):
        # LipSim models are attacked / retrieved / drawn under the metric they were tuned on.
        model = metric[len("lipsim-") :]
        return f"lipsim-{model_objective(model)[1]}:{ckpt_path(model)}"
    return metric


def metric_inputs(wildcards):
    if wildcards.metric.startswith("lipsim-"):
        return [ckpt_path(wildcards.metric[len("lipsim-") :])]
    return weights_marker(wildcards.metric)


# Baselines without weights (l2): no --random-weights to pass.
WEIGHTLESS_BASELINES = [n for n in names("baseline") if not METRICS_TABLE[n].needs_weights]


def random_weights_flag(metric):
    if metric.startswith("lipsim-") or metric in WEIGHTLESS_BASELINES:
        return ""
    if metric in SWEEP:
        return "--random-weights" if config["teacher"]["random_weights"] else ""
    return "--random-weights" if config["baselines"]["random_weights"] else ""


NEEDS_WEIGHTS = set(needs_weights())  # the registry's: metrics with downloaded weights


def weights_marker(name):
    """Marker written by fetch_weights; only metrics with downloaded weights need one."""
    if name not in NEEDS_WEIGHTS or random_weights_flag(name):
        return []
    return [f"{config['weights_dir']}/{name}.json"]


LIPSIM_METRICS = [f"lipsim-{m}" for m in MODELS]
TABLE2_METRICS = LIPSIM_METRICS + [TEACHER]
FIG3A_METRICS = list(dict.fromkeys(config["baselines"]["metrics"] + [TEACHER, f"lipsim-{PRIMARY}"]))
BAPPS = config["bapps"]
BAPPS_METRICS = list(dict.fromkeys(LIPSIM_METRICS + [TEACHER] + config["baselines"]["metrics"]))


ATTACK_RE = "|".join(ATTACKS_TABLE)  # the {attack} wildcard: the registry's attacks


def attack_grid():
    """(attack, norm, eps) of Table 2, per registry attack its radius keys (Linf in /255 units
    as in the config)."""
    a = config["attacks"]
    grid = [
        (card.name, norm, fmt(e))
        for card in ATTACKS_TABLE.values()
        for norm, key in card.radius_keys.items()
        for e in a[key]
    ]
    fig = ("autoattack", "L2", fmt(a["fig3a_eps"]))
    if fig not in grid:
        grid.append(fig)
    return grid


def attack_file(metric, attack, norm, eps):
    return f"{R}/attacks/{metric}/{attack}-{norm}-{eps}.parquet"


def table2_attack_files():
    return [attack_file(m, *g) for m in TABLE2_METRICS for g in attack_grid()]


def fig3a_attack_files():
    return [
        attack_file(m, "autoattack", "L2", fmt(config["attacks"]["fig3a_eps"]))
        for m in FIG3A_METRICS
    ]


def options(command, teacher=None, section=None):
    """The config options of `python -m lipsim {command}`: every key the schema gives it
    (x-cli), as one string (lipsim.cli._args.config_argv). Rules pass it as a params value, so
    a changed key reruns the job (cluster resources are no option: a new time limit retrains
    nothing), and shell strings spell no key. With teacher, its teacher_settings apply; with
    section, an option fed by two sections takes that section's key."""
    return config_argv(config, command, teacher=teacher, section=section)


def finetune_options(mid):
    """The finetune options of a model id: its teacher's, with the loss and metric of its
    objective (study.objectives; the run's own for plain margin ids)."""
    loss, metric = model_objective(mid)
    cfg = {**config, "metric": metric, "finetune": {**config["finetune"], "loss": loss}}
    return config_argv(cfg, "finetune", teacher=model_teacher(mid)[0])


# ---- resources ------------------------------------------------------------------------
def slurm_resources(res):
    """Schema resources -> the SLURM plugin's resource names (see snakemake-notes.md)."""
    out = {
        "mem_mb": res["mem_mb"],
        "runtime": lambda wildcards, attempt: res["runtime"] * attempt,
        "cpus_per_task": res["cpus_per_task"],
    }
    if res["gpu"]:
        out["gpu"] = res["gpu"]
    return out


def final_outputs():
    outs = [
        f"{R}/{folder}/{name}.{ext}"
        for folder, (exts, _, _, names) in REPORT_FILES.items()
        for name in names
        for ext in exts
    ]
    outs.append(f"{R}/checks/consistency.csv")
    return outs


def teacher_emb_dim():
    """Embedding size of the teacher, i.e. of the student (needed to import checkpoints)."""
    return METRICS_TABLE[TEACHER].emb_dim


# ---- helpers of the stage modules ----
DISTANCE_METRICS = [f"lipsim-{PRIMARY}", TEACHER]


def cache_dir(teacher):
    return f"{R}/cache/{teacher}"


# Teachers whose student is distilled here (the primary's may be imported instead).
TRAINED_TEACHERS = [t for t in SWEEP if t != TEACHER or not PRETRAINED_SRC]


# Teacher caches under R/cache/, per teacher of the sweep: {teacher} (the training crops) and,
# for distill.teacher_view flipped, {teacher}-mirror (the same crops mirrored: the teacher's
# view of a flipped view 0). One image list per teacher, same shards and index format.
CACHE_TEACHER = {}  # cache name -> (teacher, cache-fill flag)
for _t in TRAINED_TEACHERS:
    CACHE_TEACHER[_t] = (_t, "")
    CACHE_TEACHER[f"{_t}-mirror"] = (_t, "--mirror")
CACHE_RE = "|".join(re.escape(c) for c in CACHE_TEACHER) or "(?!)"


def distill_caches(teacher):
    """The caches distillation reads, by the distill option naming them."""
    caches = {"cache_dir": cache_dir(teacher)}
    if teacher_section(config, "distill", teacher)["teacher_view"] == "flipped":
        caches["mirror_cache_dir"] = f"{cache_dir(teacher)}-mirror"
    return caches


def distill_inputs(wildcards):
    teacher = model_teacher(wildcards.model)[0]
    return {k: f"{d}/index.parquet" for k, d in distill_caches(teacher).items()}


def cache_images(wildcards):
    return f"{cache_dir(CACHE_TEACHER[wildcards.cache][0])}/images.parquet"


def distill_launcher():
    """How the trainer's processes are started; the trainer reads rank/world from the env."""
    d = config["distill"]
    res = d["resources"]
    if d["launcher"] == "torchrun":
        n = res["tasks_per_node"]
        return f"torchrun --standalone --nproc_per_node={n} -m lipsim distill"
    if d["launcher"] == "srun":
        # With the `mpi` resource the plugin runs this line in the batch script, but it strips
        # the SLURM_* variables first: a bare srun would start one task. Say the layout again.
        gpus = f" --gpus-per-node={res['gpu']}" if res["gpu"] else ""
        return (
            f"srun --nodes={res['nodes']} --ntasks-per-node={res['tasks_per_node']}{gpus} "
            "--kill-on-bad-exit=1 python -m lipsim distill"
        )
    return "python -m lipsim distill"


def distill_resources():
    res = config["distill"]["resources"]
    out = slurm_resources(res)
    if config["distill"]["launcher"] == "srun":
        out.update(nodes=res["nodes"], tasks=res["nodes"] * res["tasks_per_node"], mpi="srun")
        if res["gpu"]:
            # The plugin's `gpu` is a job total (--gpus); DDP wants the same count per node.
            out.pop("gpu", None)
            out["slurm_extra"] = f"'--gpus-per-node={res['gpu']}'"
    return out


def consistency_pairs():
    """Every (LipSim model, attack) pair, l2 and linf: a certified triplet must never be broken
    (an linf perturbation is checked through its l2 norm)."""
    pairs = []
    for model in MODELS:
        for attack, norm, eps in attack_grid():
            pairs.append((model, attack_file(f"lipsim-{model}", attack, norm, eps)))
    for model in EXTRA_MODELS:
        pairs.append((model, study_attack_file(model)))
    return pairs


def study_attack_file(model):
    """The study's attack: AutoAttack l2 at the paper's radius (that of figure 3a)."""
    return attack_file(f"lipsim-{model}", "autoattack", "L2", fmt(config["attacks"]["fig3a_eps"]))


def report_outputs(folder, name):
    """One table or figure in every format, shown in the HTML report with its caption."""
    exts, category, label, _ = REPORT_FILES[folder]
    caption = f"../report/{name}.rst"
    outs = []
    for i, ext in enumerate(exts):
        # The report sorts label values and opens the first: upper case sorts before lower, so
        # the format it can show inline (HTML, PNG) is the one it opens.
        labels = {label: name, "format": ext.upper() if i == 0 else ext}
        outs.append(report(f"{R}/{folder}/{name}.{ext}", caption, category=category, labels=labels))
    return outs


def missing_user_data():
    """Folders (licensed data) and checkpoint files the user must provide that a run still
    needs but are not there.

    A folder counts only while the outputs it feeds are missing: regenerating a figure after
    ImageNet left the scratch space must not be blocked. (If such outputs exist but are stale,
    the check_imagenet / check_natural rules still stop the job with a clear message.)
    """
    how = {
        "imagenet": "ImageNet-1k train (image-net.org, licence): the folder holding train/<wnid>/",
        "natural_images": "a flat folder of natural images, e.g. COCO val2017 (cocodataset.org)",
        "night": "a NIGHT folder holding data.csv (or set night.source: download)",
        "bapps": "a BAPPS 2AFC folder holding val/ (or set bapps.source: download)",
    }
    needed = {
        "night": True,
        "imagenet": not all(
            os.path.exists(ckpt_path(model_id(t, "pretrained"))) for t in TRAINED_TEACHERS
        ),
        "natural_images": not all(
            os.path.exists(f"{R}/{step}/{m}.parquet")
            for step in ("distances", "retrieval")
            for m in DISTANCE_METRICS
        ),
        "bapps": BAPPS["enabled"]
        and not all(os.path.exists(f"{R}/bapps/{m}.parquet") for m in BAPPS_METRICS),
    }
    out = []
    for key in ("night", "imagenet", "natural_images", "bapps"):
        sec = config[key]
        if needed[key] and sec["source"] == "path" and not os.path.exists(sec["path"]):
            out.append((f"{key}.path", sec["path"], how[key]))
    # Checkpoints to import (not 'released': the fetch_released rule makes those).
    imports = [("pretrained_checkpoint", "pretrained", config["pretrained_checkpoint"])]
    imports += [
        (f"finetuned_checkpoints.{k}", f"margin{fmt(k)}", v)
        for k, v in config["finetuned_checkpoints"].items()
    ]
    for key, model, src in imports:
        if src is not None and src != "released" and not os.path.exists(ckpt_path(model)):
            if not os.path.exists(src):
                out.append((key, src, "the checkpoint file to import (or 'released')"))
    return out


def user_data_message(missing):
    lines = [f"  {key} = {path!r} does not exist: provide {how}" for key, path, how in missing]
    return "data to provide before this run:\n" + "\n".join(lines)


def check_user_data():
    """At parse time, dry runs included. NIGHT's folder and the checkpoints to import are inputs
    of the DAG: without them snakemake would stop with a MissingInputException (or, for a
    finetuned checkpoint, plan a finetune instead), so they stop here, named. The other
    folders are parameters: named here as a note, required when a real run starts (onstart)."""
    missing = missing_user_data()
    inputs = [m for m in missing if m[0] == "night.path" or not m[0].endswith(".path")]
    if inputs:
        raise WorkflowError(user_data_message(inputs))
    if missing:
        print(f"note: {user_data_message(missing)}", file=sys.stderr)
