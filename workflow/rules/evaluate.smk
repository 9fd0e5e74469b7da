# Certification of every LipSim model and natural 2AFC scores of every metric on NIGHT test.
from lipsim.eps import LEVELS
from lipsim.radius import config_eps_scale


rule certify:
    input:
        unpack(night_inputs),
        ckpt=ckpt_path("{model}"),
    output:
        f"{R}/certify/{{model}}.parquet",
    params:
        device=config["device"],
        splits=EVAL_SPLITS,
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        # /255 radii, l2: applied at image_size like the attacks' (lipsim.radius).
        scale=fmt(LEVELS * config_eps_scale(config, "L2")),
        batch=config["certify"]["batch_size"],
        min_votes=config["night"]["min_votes"],
        metrics=" ".join(config["certify"]["metrics"]),
        half_votes=config["certify"]["half_votes"],
        tie_radius=config["certify"]["tie_radius"],
        scoring=config["certify"]["scoring"],
    resources:
        **slurm_resources(config["certify"]["resources"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/certify/{{model}}.log",
    shell:
        "python -m lipsim certify --checkpoint {input.ckpt} --night {input.night} --splits {params.splits} "
        "--metrics {params.metrics} --half-votes {params.half_votes} --tie-radius {params.tie_radius} "
        "--scoring {params.scoring} "
        "--eps {params.eps} --eps-scale {params.scale} --batch-size {params.batch} "
        "--device {params.device} --min-votes {params.min_votes} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/eval/{{metric}}.parquet",
    params:
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        splits=EVAL_SPLITS,
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        batch=config["evaluation"]["batch_size"],
        min_votes=config["night"]["min_votes"],
        # One scoring rule for every row of Table 1: the certify step's keys.
        scoring=config["certify"]["scoring"],
        half_votes=config["certify"]["half_votes"],
    resources:
        **slurm_resources(config["resources"]["eval"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/evaluate/{{metric}}.log",
    shell:
        "python -m lipsim evaluate --metric {params.spec} --night {input.night} --splits {params.splits} "
        "--batch-size {params.batch} --device {params.device} --min-votes {params.min_votes} "
        "--scoring {params.scoring} --half-votes {params.half_votes} "
        "--weights-dir {params.weights} --image-size {params.size} {params.rw} --out {output} > {log} 2>&1"
