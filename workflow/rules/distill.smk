# Step 1: teacher-embedding cache (scattered over shard groups) and distillation (DDP).


rule cache_list:
    input:
        f"{R}/checks/imagenet.json",
    output:
        f"{R}/cache/{{cache}}/images.parquet",
    log:
        f"{R}/logs/cache_list/{{cache}}.log",
    wildcard_constraints:
        cache="|".join(re.escape(t) for t in TRAINED_TEACHERS) or "(?!)",
    conda:
        "../../envs/lipsim.yaml"
    params:
        images=imagenet_dir(),
    shell:
        "python -m lipsim cache-list --images {params.images} --out {output} > {log} 2>&1"


rule cache_fill:
    input:
        images=cache_images,
        weights=lambda wc: weights_marker(CACHE_TEACHER[wc.cache][0]),
    output:
        f"{R}/cache/{{cache}}/part-{{part}}.json",
    log:
        f"{R}/logs/cache_fill/{{cache}}/part-{{part}}.log",
    benchmark:
        f"{R}/benchmarks/cache_fill/{{cache}}/part-{{part}}.tsv"
    wildcard_constraints:
        cache=CACHE_RE,
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["resources"]["cache"]),
    params:
        # distill.crop too: the crops the teacher embeds are the student's
        opts=lambda wc: options("cache-fill", CACHE_TEACHER[wc.cache][0]),
        weights=lambda wc: config["weights_dir"],
        teacher=lambda wc: CACHE_TEACHER[wc.cache][0],
        cache=lambda wc, output: os.path.dirname(output[0]),
        images=imagenet_dir(),
        mirror=lambda wc: CACHE_TEACHER[wc.cache][1],
        rw="--random-weights" if config["teacher"]["random_weights"] else "",
    shell:
        "python -m lipsim cache-fill {params.opts} --teacher {params.teacher} "
        "--weights-dir {params.weights} --images {params.images} --list {input.images} "
        "--part {wildcards.part} {params.rw} {params.mirror} --out-dir {params.cache} > {log} 2>&1"


rule cache_index:
    input:
        images=cache_images,
        parts=expand(
            f"{R}/cache/{{{{cache}}}}/part-{{part}}.json", part=range(config["cache"]["parts"])
        ),
    output:
        f"{R}/cache/{{cache}}/index.parquet",
    log:
        f"{R}/logs/cache_index/{{cache}}.log",
    wildcard_constraints:
        cache=CACHE_RE,
    conda:
        "../../envs/lipsim.yaml"
    params:
        opts=options("cache-index"),
        cache=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "python -m lipsim cache-index {params.opts} --cache-dir {params.cache} "
        "--list {input.images} --out {output} > {log} 2>&1"


if PRETRAINED_SRC:

    rule import_pretrained:
        input:
            PRETRAINED_SRC,
        output:
            ckpt_path("pretrained"),
        log:
            f"{R}/logs/import_pretrained.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("import-checkpoint"),
            teacher=TEACHER,
            emb_dim=teacher_emb_dim(),
        shell:
            "python -m lipsim import-checkpoint {params.opts} --src {input} "
            "--emb-dim {params.emb_dim} --stage pretrained "
            "--teacher {params.teacher} --out {output} > {log} 2>&1"


# One distillation per teacher of the sweep (the primary's is imported when
# pretrained_checkpoint is set): R/checkpoints/pretrained.pt, R/checkpoints/{teacher}/pretrained.pt.
rule distill:
    input:
        unpack(distill_inputs),
    output:
        f"{R}/checkpoints/{{model}}.pt",
    log:
        f"{R}/logs/distill/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/distill/{{model}}.tsv"
    wildcard_constraints:
        model="|".join(re.escape(model_id(t, "pretrained")) for t in TRAINED_TEACHERS) or "(?!)",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **distill_resources(),
    params:
        opts=lambda wc: options("distill", model_teacher(wc.model)[0]),
        teacher=lambda wc: model_teacher(wc.model)[0],
        caches=lambda wc: " ".join(
            f"--{k.replace('_', '-')} {d}"
            for k, d in distill_caches(model_teacher(wc.model)[0]).items()
        ),
        images=imagenet_dir(),
        launcher=distill_launcher(),
        workdir=lambda wc: f"{R}/train/{wc.model}",
    shell:
        "{params.launcher} {params.opts} {params.caches} --images {params.images} "
        "--teacher {params.teacher} --workdir {params.workdir} --metrics {params.workdir}/metrics.csv "
        "--out {output} > {log} 2>&1"
