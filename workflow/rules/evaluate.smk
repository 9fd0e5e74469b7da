# Certification of every LipSim model and natural 2AFC scores of every metric on NIGHT test.
from lipsim.eps import LEVELS
from lipsim.radius import config_eps_scale


rule certify:
    input:
        unpack(night_inputs),
        ckpt=ckpt_path("{model}"),
    output:
        f"{R}/certify/{{model}}.parquet",
    log:
        f"{R}/logs/certify/{{model}}.log",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["certify"]["resources"]),
    params:
        opts=options("certify"),
        # /255 radii, l2: applied at image_size like the attacks' (lipsim.radius).
        scale=fmt(LEVELS * config_eps_scale(config, "L2")),
    shell:
        "python -m lipsim certify {params.opts} --eps-scale {params.scale} --checkpoint {input.ckpt} "
        "--night {input.night} --out {output} > {log} 2>&1"


rule evaluate:
    input:
        unpack(night_inputs),
        deps=metric_inputs,
    output:
        f"{R}/eval/{{metric}}.parquet",
    log:
        f"{R}/logs/evaluate/{{metric}}.log",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["resources"]["eval"]),
    params:
        opts=options("evaluate"),
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        size=config["image_size"],
    shell:
        "python -m lipsim evaluate {params.opts} --metric {params.spec} --night {input.night} "
        "--weights-dir {params.weights} --image-size {params.size} {params.rw} --out {output} "
        "> {log} 2>&1"
