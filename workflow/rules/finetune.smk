# Step 2: finetuning on NIGHT with the hinge loss, one job per teacher and margin (or imported
# checkpoints). Model ids: margin0.5 (primary teacher), {teacher}/margin0.5 (the others),
# margin0.5-hinge_sound-cosine (an objective of study.objectives).


rule finetune:
    input:
        unpack(night_inputs),
        init=lambda wc: ckpt_path(model_id(model_teacher(wc.model)[0], "pretrained")),
    output:
        f"{R}/checkpoints/{{model}}.pt",
    log:
        f"{R}/logs/finetune/{{model}}.log",
    benchmark:
        f"{R}/benchmarks/finetune/{{model}}.tsv"
    wildcard_constraints:
        model=rf"{teacher_prefix_re(OTHER_TEACHERS)}margin\d+(\.\d+)?{OBJECTIVE_RE}",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["finetune"]["resources"]),
    params:
        opts=lambda wc: finetune_options(wc.model),
        margin=lambda wc: model_teacher(wc.model)[1][len("margin") :].partition("-")[0],
        workdir=lambda wc: f"{R}/train/{wc.model}",
    shell:
        "python -m lipsim finetune {params.opts} --init {input.init} --night {input.night} "
        "--margin {params.margin} --workdir {params.workdir} "
        "--metrics {params.workdir}/metrics.csv --out {output} > {log} 2>&1"


if IMPORTED:

    ruleorder: import_finetuned > finetune

    rule import_finetuned:
        input:
            lambda wc: IMPORTED[wc.margin],
        output:
            ckpt_path("margin{margin}"),
        log:
            f"{R}/logs/import_finetuned/margin{{margin}}.log",
        wildcard_constraints:
            margin="|".join(re.escape(m) for m in IMPORTED),
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("import-checkpoint"),
            teacher=TEACHER,
            emb_dim=teacher_emb_dim(),
            # The authors finetuned with their metric, 1 - cos (docs/method.md section 11).
            metric="cosine",
        shell:
            "python -m lipsim import-checkpoint {params.opts} --src {input} "
            "--emb-dim {params.emb_dim} --stage finetuned "
            "--margin {wildcards.margin} --metric {params.metric} --teacher {params.teacher} "
            "--out {output} > {log} 2>&1"
