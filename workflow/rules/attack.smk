# Attacks on the reference image, the certificate/attack consistency check, figure 3b
# distances and image retrieval.
from lipsim.radius import config_eps_scale


rule attack:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/attacks/{{metric}}/{{attack}}-{{norm}}-{{eps}}.parquet",
    params:
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        splits=EVAL_SPLITS,
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        # Radii in file names are the configured ones (Linf in /255 units).
        scale=lambda wc: config_eps_scale(config, wc.norm),
        a=hparams("attacks"),
        min_votes=config["night"]["min_votes"],
    resources:
        **slurm_resources(config["attacks"]["resources"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.log",
    benchmark:
        f"{R}/benchmarks/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.tsv"
    shell:
        "python -m lipsim attack --metric {params.spec} --night {input.night} --splits {params.splits} "
        "--attack {wildcards.attack} --norm {wildcards.norm} --eps {wildcards.eps} "
        "--eps-scale {params.scale} --budget {params.a[budget]} --steps {params.a[pgd_steps]} "
        "--restarts {params.a[pgd_restarts]} --max-triplets {params.a[max_triplets]} "
        "--batch-size {params.a[batch_size]} --seed {params.a[seed]} "
        "--min-votes {params.min_votes} --device {params.device} "
        "--weights-dir {params.weights} --image-size {params.size} {params.rw} --out {output} > {log} 2>&1"


rule check_consistency:
    input:
        certify=expand(f"{R}/certify/{{model}}.parquet", model=MODELS + EXTRA_MODELS),
        attacks=[f for _, f in consistency_pairs()],
    output:
        f"{R}/checks/consistency.csv",
    params:
        certify=" ".join(f"{m}={R}/certify/{m}.parquet" for m in MODELS + EXTRA_MODELS),
        attacks=" ".join(f"{m}={f}" for m, f in consistency_pairs()),
        size=config["image_size"],
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/check_consistency.log",
    shell:
        "python -m lipsim check-consistency --certify {params.certify} --attacks {params.attacks} "
        "--eps-scale 255 --image-size {params.size} --out {output} > {log} 2>&1"


rule distances:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/distances/{{metric}}.parquet",
    params:
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        images=natural_dir(),
        d=config["distances"],
        scale=config_eps_scale(config, "L2"),
    resources:
        **slurm_resources(config["resources"]["eval"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/distances/{{metric}}.log",
    shell:
        "python -m lipsim distances --metric {params.spec} --images {params.images} --eps {params.d[eps]} "
        "--eps-scale {params.scale} "
        "--steps {params.d[steps]} --n-images {params.d[n_images]} --seed 0 "
        "--device {params.device} --weights-dir {params.weights} --image-size {params.size} {params.rw} "
        "--out {output} > {log} 2>&1"


rule retrieval:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/retrieval/{{metric}}.parquet",
    params:
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
        images=natural_dir(),
        r=config["retrieval"],
        eps=" ".join(fmt(e) for e in config["retrieval"]["eps"]),
        k=" ".join(str(k) for k in config["retrieval"]["k"]),
        scale=config_eps_scale(config, "L2"),
    resources:
        **slurm_resources(config["resources"]["eval"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/retrieval/{{metric}}.log",
    shell:
        "python -m lipsim retrieval --metric {params.spec} --images {params.images} "
        "--n-queries {params.r[n_queries]} --eps {params.eps} --eps-scale {params.scale} --k {params.k} "
        "--steps {params.r[steps]} --distractors {params.r[distractors]} "
        "--distractor-noise {params.r[distractor_noise]} --seed 0 --device {params.device} "
        "--weights-dir {params.weights} --image-size {params.size} {params.rw} --out {output} > {log} 2>&1"
