# Attacks on the reference image, the certificate/attack consistency check, figure 3b
# distances and image retrieval.
from lipsim.radius import config_eps_scale


rule attack:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/attacks/{{metric}}/{{attack}}-{{norm}}-{{eps}}.parquet",
    log:
        f"{R}/logs/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.log",
    benchmark:
        f"{R}/benchmarks/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.tsv"
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["attacks"]["resources"]),
    params:
        opts=options("attack"),
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        # Radii in file names are the configured ones (Linf in /255 units).
        scale=lambda wc: config_eps_scale(config, wc.norm),
    shell:
        "python -m lipsim attack {params.opts} --metric {params.spec} --night {input.night} "
        "--attack {wildcards.attack} --norm {wildcards.norm} --eps {wildcards.eps} "
        "--eps-scale {params.scale} --weights-dir {params.weights} --image-size {params.size} "
        "{params.rw} --out {output} > {log} 2>&1"


rule check_consistency:
    input:
        certify=expand(f"{R}/certify/{{model}}.parquet", model=MODELS + EXTRA_MODELS),
        attacks=[f for _, f in consistency_pairs()],
    output:
        f"{R}/checks/consistency.csv",
    log:
        f"{R}/logs/check_consistency.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        certify=" ".join(f"{m}={R}/certify/{m}.parquet" for m in MODELS + EXTRA_MODELS),
        attacks=" ".join(f"{m}={f}" for m, f in consistency_pairs()),
        size=config["image_size"],
    shell:
        "python -m lipsim check-consistency --certify {params.certify} --attacks {params.attacks} "
        "--eps-scale 255 --image-size {params.size} --out {output} > {log} 2>&1"


rule distances:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/distances/{{metric}}.parquet",
    log:
        f"{R}/logs/distances/{{metric}}.log",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["resources"]["eval"]),
    params:
        opts=options("distances"),
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        images=natural_dir(),
        scale=config_eps_scale(config, "L2"),
    shell:
        "python -m lipsim distances {params.opts} --metric {params.spec} --images {params.images} "
        "--eps-scale {params.scale} --seed 0 --weights-dir {params.weights} "
        "--image-size {params.size} {params.rw} --out {output} > {log} 2>&1"


rule retrieval:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/retrieval/{{metric}}.parquet",
    log:
        f"{R}/logs/retrieval/{{metric}}.log",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["resources"]["eval"]),
    params:
        opts=options("retrieval"),
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        images=natural_dir(),
        scale=config_eps_scale(config, "L2"),
    shell:
        "python -m lipsim retrieval {params.opts} --metric {params.spec} --images {params.images} "
        "--eps-scale {params.scale} --seed 0 --weights-dir {params.weights} "
        "--image-size {params.size} {params.rw} --out {output} > {log} 2>&1"
