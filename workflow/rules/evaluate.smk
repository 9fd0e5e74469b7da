# Certification of every LipSim model and natural 2AFC scores of every metric on NIGHT test.

EVAL_SPLITS = " ".join(config["evaluation"]["splits"])


rule certify:
    input:
        unpack(night_inputs),
        ckpt=checkpoint("{model}"),
    output:
        f"{R}/certify/{{model}}.parquet",
    params:
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        batch=config["certify"]["batch_size"],
        min_votes=config["night"]["min_votes"],
    resources:
        **slurm_resources(config["certify"]["resources"]),
    log:
        f"{R}/logs/certify/{{model}}.log",
    shell:
        "{PY} certify --checkpoint {input.ckpt} --night {input.night} --splits {EVAL_SPLITS} "
        "--eps {params.eps} --eps-scale 255 --batch-size {params.batch} "
        "--device {config[device]} --min-votes {params.min_votes} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/eval/{{metric}}.parquet",
    params:
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        batch=config["evaluation"]["batch_size"],
        min_votes=config["night"]["min_votes"],
    resources:
        **slurm_resources(config["resources"]["eval"]),
    log:
        f"{R}/logs/evaluate/{{metric}}.log",
    shell:
        "{PY} evaluate --metric {params.spec} --night {input.night} --splits {EVAL_SPLITS} "
        "--batch-size {params.batch} --device {config[device]} --min-votes {params.min_votes} "
        "--weights-dir {config[weights_dir]} {params.rw} --out {output} > {log} 2>&1"
