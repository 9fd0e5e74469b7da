# Attacks on the reference image, the certificate/attack consistency check, figure 3b
# distances and image retrieval.

rule attack:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/attacks/{{metric}}/{{attack}}-{{norm}}-{{eps}}.parquet",
    params:
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        # Linf radii are written in /255 units in the config and in file names.
        scale=lambda wc: 255 if wc.norm == "Linf" else 1,
        a=config["attacks"],
        min_votes=config["night"]["min_votes"],
    resources:
        **slurm_resources(config["attacks"]["resources"]),
    log:
        f"{R}/logs/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.log",
    benchmark:
        f"{R}/benchmarks/attack/{{metric}}/{{attack}}-{{norm}}-{{eps}}.tsv"
    shell:
        "{PY} attack --metric {params.spec} --night {input.night} --splits {EVAL_SPLITS} "
        "--attack {wildcards.attack} --norm {wildcards.norm} --eps {wildcards.eps} "
        "--eps-scale {params.scale} --budget {params.a[budget]} --steps {params.a[pgd_steps]} "
        "--restarts {params.a[pgd_restarts]} --max-triplets {params.a[max_triplets]} "
        "--batch-size {params.a[batch_size]} --seed {params.a[seed]} "
        "--min-votes {params.min_votes} --device {config[device]} "
        "--weights-dir {config[weights_dir]} {params.rw} --out {output} > {log} 2>&1"


def consistency_pairs():
    """Every (LipSim model, l2 attack) pair: a certified triplet must never be broken."""
    pairs = []
    for model in MODELS:
        for attack, norm, eps in attack_grid():
            if norm == "L2":
                pairs.append((model, attack_file(f"lipsim-{model}", attack, norm, eps)))
    return pairs


rule check_consistency:
    input:
        certify=expand(f"{R}/certify/{{model}}.parquet", model=MODELS),
        attacks=[f for _, f in consistency_pairs()],
    output:
        f"{R}/checks/consistency.csv",
    params:
        certify=" ".join(f"{m}={R}/certify/{m}.parquet" for m in MODELS),
        attacks=" ".join(f"{m}={f}" for m, f in consistency_pairs()),
    log:
        f"{R}/logs/check_consistency.log",
    shell:
        "{PY} check-consistency --certify {params.certify} --attacks {params.attacks} "
        "--eps-scale 255 --out {output} > {log} 2>&1"


DISTANCE_METRICS = [f"lipsim-{PRIMARY}", TEACHER]


rule distances:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/distances/{{metric}}.parquet",
    params:
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        images=natural_dir(),
        d=config["distances"],
    resources:
        **slurm_resources(config["resources"]["eval"]),
    log:
        f"{R}/logs/distances/{{metric}}.log",
    shell:
        "{PY} distances --metric {params.spec} --images {params.images} --eps {params.d[eps]} "
        "--steps {params.d[steps]} --n-images {params.d[n_images]} --seed 0 "
        "--device {config[device]} --weights-dir {config[weights_dir]} {params.rw} "
        "--out {output} > {log} 2>&1"


rule retrieval:
    input:
        f"{R}/checks/natural.json",
        deps=metric_inputs,
    output:
        f"{R}/retrieval/{{metric}}.parquet",
    params:
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        images=natural_dir(),
        r=config["retrieval"],
        eps=" ".join(fmt(e) for e in config["retrieval"]["eps"]),
        k=" ".join(str(k) for k in config["retrieval"]["k"]),
    resources:
        **slurm_resources(config["resources"]["eval"]),
    log:
        f"{R}/logs/retrieval/{{metric}}.log",
    shell:
        "{PY} retrieval --metric {params.spec} --images {params.images} "
        "--n-queries {params.r[n_queries]} --eps {params.eps} --k {params.k} "
        "--steps {params.r[steps]} --seed 0 --device {config[device]} "
        "--weights-dir {config[weights_dir]} {params.rw} --out {output} > {log} 2>&1"
