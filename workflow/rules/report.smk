# Tables 1, 2 and retrieval, figures 3a, 3b and the margin trade-off, the manifest; beyond the
# paper: sound vs authors' radii and the finetuning objectives study.

# Labels of radii meant at another image size (attacks.eps_reference_size; lipsim.radius).
EPS_SCALING = (
    f"--image-size {config['image_size']} "
    f"--eps-reference-size {config['attacks']['eps_reference_size']}"
    if config["attacks"]["eps_reference_size"]
    else ""
)


rule table1:
    input:
        certify=expand(f"{R}/certify/{{model}}.parquet", model=SWEEP_MODELS),
        # Each teacher's own natural score: the reference row of its group.
        teachers=expand(f"{R}/eval/{{metric}}.parquet", metric=SWEEP),
        # A certificate contradicted by an attack stops the pipeline before any table.
        check=f"{R}/checks/consistency.csv",
    output:
        report_outputs("tables", "table1"),
    log:
        f"{R}/logs/table1.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        opts=options("table1"),
        teacher=TEACHER,
        # TEACHER/MODEL=FILE: every row is labelled with the teacher it was distilled from.
        certify=" ".join(
            f"{'/'.join(model_teacher(m))}={R}/certify/{m}.parquet" for m in SWEEP_MODELS
        ),
        evals=" ".join(f"{t}={R}/eval/{t}.parquet" for t in SWEEP),
        # Certified at the radii applied like the attacks' (labelled with the paper's).
        scaling=EPS_SCALING,
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
    shell:
        "python -m lipsim table1 {params.opts} {params.scaling} --certify {params.certify} "
        "--eval {params.evals} --teacher {params.teacher} --out-prefix {params.prefix} > {log} 2>&1"


rule table2:
    input:
        attacks=table2_attack_files(),
        check=f"{R}/checks/consistency.csv",
    output:
        report_outputs("tables", "table2"),
    log:
        f"{R}/logs/table2.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        teacher=TEACHER,
        scaling=EPS_SCALING,
    shell:
        "python -m lipsim table2 --attacks {input.attacks} --teacher {params.teacher} "
        "{params.scaling} --out-prefix {params.prefix} > {log} 2>&1"


rule table_retrieval:
    input:
        expand(f"{R}/retrieval/{{metric}}.parquet", metric=DISTANCE_METRICS),
    output:
        report_outputs("tables", "retrieval"),
    log:
        f"{R}/logs/table_retrieval.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        scaling=EPS_SCALING,
    shell:
        "python -m lipsim table-retrieval --inputs {input} {params.scaling} "
        "--out-prefix {params.prefix} > {log} 2>&1"


rule fig3a:
    # Natural bars from the attack files' clean scores: the same triplets as the attacked bars
    # (attacks.max_triplets may attack a subset of the test set), as in Table 2.
    input:
        attacks=fig3a_attack_files(),
    output:
        report_outputs("figures", "fig3a"),
    log:
        f"{R}/logs/fig3a.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        attacks=" ".join(f"{m}={f}" for m, f in zip(FIG3A_METRICS, fig3a_attack_files())),
        eps=fmt(config["attacks"]["fig3a_eps"]),
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        scaling=EPS_SCALING,
    shell:
        "python -m lipsim fig3a --attacks {params.attacks} --norm L2 "
        "--eps {params.eps} {params.scaling} --out-prefix {params.prefix} > {log} 2>&1"


rule fig3b:
    input:
        expand(f"{R}/distances/{{metric}}.parquet", metric=DISTANCE_METRICS),
    output:
        report_outputs("figures", "fig3b"),
    log:
        f"{R}/logs/fig3b.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        dists=" ".join(f"{m}={R}/distances/{m}.parquet" for m in DISTANCE_METRICS),
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
    shell:
        "python -m lipsim fig3b --distances {params.dists} --out-prefix {params.prefix} > {log} 2>&1"


rule fig_margins:
    # From the certify files rather than Table 1: its radii are scaled like the attacks'.
    input:
        certify=expand(f"{R}/certify/{{model}}.parquet", model=SWEEP_MODELS),
        teachers=expand(f"{R}/eval/{{metric}}.parquet", metric=SWEEP),
        check=f"{R}/checks/consistency.csv",
    output:
        report_outputs("figures", "margins"),
    log:
        f"{R}/logs/fig_margins.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        certify=" ".join(f"{m}={R}/certify/{m}.parquet" for m in SWEEP_MODELS),
        evals=" ".join(f"{t}={R}/eval/{t}.parquet" for t in SWEEP),
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        scoring=config["certify"]["scoring"],
        scaling=EPS_SCALING,
        prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        metric=config["metric"],
    shell:
        "python -m lipsim fig-margins --certify {params.certify} --eval {params.evals} "
        "--metric {params.metric} --eps {params.eps} --scoring {params.scoring} "
        "{params.scaling} --out-prefix {params.prefix} > {log} 2>&1"


rule radii:
    # Sound vs authors' radius per triplet (figure) and model (table), where cosine is certified.
    input:
        expand(f"{R}/certify/{{model}}.parquet", model=SWEEP_MODELS + EXTRA_MODELS),
    output:
        report_outputs("tables", "radii"),
        report_outputs("figures", "radii"),
    log:
        f"{R}/logs/radii.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        certify=" ".join(f"{m}={R}/certify/{m}.parquet" for m in SWEEP_MODELS + EXTRA_MODELS),
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        scaling=EPS_SCALING,
        table=lambda wc, output: output[0].rsplit(".", 1)[0],
        figure=lambda wc, output: output[-1].rsplit(".", 1)[0],
    shell:
        "python -m lipsim radii --certify {params.certify} --metric cosine --eps {params.eps} "
        "{params.scaling} --table-prefix {params.table} --figure-prefix {params.figure} "
        "> {log} 2>&1"


rule study:
    # Finetuning objectives at equal margins (study.objectives).
    input:
        certify=[f"{R}/certify/{m}.parquet" for ms in STUDY_MODELS.values() for m in ms],
        attacks=[study_attack_file(m) for ms in STUDY_MODELS.values() for m in ms],
        check=f"{R}/checks/consistency.csv",
    output:
        report_outputs("tables", "study"),
        report_outputs("figures", "study"),
    log:
        f"{R}/logs/study.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        certify=" ".join(
            f"{o}/{m}={R}/certify/{m}.parquet" for o, ms in STUDY_MODELS.items() for m in ms
        ),
        attacks=" ".join(
            f"{o}/{m}={study_attack_file(m)}" for o, ms in STUDY_MODELS.items() for m in ms
        ),
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        scoring=config["certify"]["scoring"],
        scaling=EPS_SCALING,
        table=lambda wc, output: output[0].rsplit(".", 1)[0],
        figure=lambda wc, output: output[-1].rsplit(".", 1)[0],
    shell:
        "python -m lipsim study --certify {params.certify} --attacks {params.attacks} "
        "--eps {params.eps} --scoring {params.scoring} {params.scaling} "
        "--table-prefix {params.table} --figure-prefix {params.figure} > {log} 2>&1"


localrules:
    resolved_config,


rule resolved_config:
    """The config as validated (defaults filled in): what the manifest's config_hash hashes."""
    output:
        f"{R}/config.json",
    log:
        f"{R}/logs/resolved_config.log",
    params:
        config_hash=CONFIG_HASH,
    run:
        from lipsim.atomic import write_json

        write_json(output[0], {"config_hash": params.config_hash, "config": config})


rule manifest:
    input:
        final_outputs(),
        config=f"{R}/config.json",
    output:
        f"{R}/manifest.parquet",
    log:
        f"{R}/logs/manifest.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        root=lambda wc, output: os.path.dirname(output[0]),
        config_hash=CONFIG_HASH,
    shell:
        "python -m lipsim manifest --root {params.root} --config-json {input.config} "
        "--config-hash {params.config_hash} --snakemake-dir .snakemake --out {output} "
        "> {log} 2>&1"
