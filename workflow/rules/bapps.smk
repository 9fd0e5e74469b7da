# BAPPS 2AFC (validation): data (generated or downloaded), layout check, every metric scored
# per category (LipSim models also certified), the BAPPS table.

if BAPPS["enabled"] and BAPPS["source"] == "generate":

    rule make_demo_bapps:
        output:
            directory(f"{R}/data/bapps"),
        params:
            g=BAPPS["generate"],
        conda:
            "../../envs/lipsim.yaml"
        log:
            f"{R}/logs/make_demo_bapps.log",
        shell:
            "python -m lipsim make-demo-bapps --out {output} --seed {params.g[seed]} "
            "--n-per-category {params.g[n_per_category]} > {log} 2>&1"

elif BAPPS["enabled"] and BAPPS["source"] == "download":

    # A localrule: it needs the network, which login nodes have and compute nodes may not.
    localrules:
        download_bapps,

    rule download_bapps:
        output:
            directory(f"{R}/data/bapps"),
        params:
            d=BAPPS["download"],
            url=f"--url {BAPPS['download']['url']}" if BAPPS["download"]["url"] else "",
            sha=""
            if BAPPS["download"]["sha256"] is None
            else f"--sha256 '{BAPPS['download']['sha256']}'",
        conda:
            "../../envs/lipsim.yaml"
        log:
            f"{R}/logs/download_bapps.log",
        shell:
            "python -m lipsim download-bapps --out {output} {params.url} {params.sha} "
            "--retries {params.d[retries]} --timeout {params.d[timeout]} --no-progress "
            "> {log} 2>&1"


rule check_bapps:
    input:
        generated(bapps_dir()),
    output:
        f"{R}/checks/bapps.json",
    params:
        root=lambda wc, input: input[0] if input else bapps_dir(),
        categories=" ".join(BAPPS["categories"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/check_bapps.log",
    shell:
        "python -m lipsim check-bapps --root {params.root} --categories {params.categories} "
        "--report {output} > {log} 2>&1"


rule evaluate_bapps:
    input:
        data=generated(bapps_dir()),
        check=f"{R}/checks/bapps.json",
        deps=metric_inputs,
    output:
        f"{R}/bapps/{{metric}}.parquet",
    params:
        root=lambda wc, input: input.data[0] if input.data else bapps_dir(),
        device=config["device"],
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        # The LipSim authors load BAPPS at 224 (the paper's image_size); LipSim models
        # always take their own input size (the certificate holds there).
        size=config["image_size"],
        categories=" ".join(BAPPS["categories"]),
        eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
        batch=BAPPS["batch_size"],
        # The scoring rule of the authors' columns: the certify step's keys.
        scoring=config["certify"]["scoring"],
        half_votes=config["certify"]["half_votes"],
        tie_radius=config["certify"]["tie_radius"],
    resources:
        **slurm_resources(config["resources"]["eval"]),
    conda:
        "../../envs/lipsim.yaml"
    log:
        f"{R}/logs/evaluate_bapps/{{metric}}.log",
    shell:
        "python -m lipsim evaluate-bapps --metric {params.spec} --bapps {params.root} "
        "--categories {params.categories} --eps {params.eps} --batch-size {params.batch} "
        "--device {params.device} --weights-dir {params.weights} --image-size {params.size} "
        "--scoring {params.scoring} --half-votes {params.half_votes} --tie-radius {params.tie_radius} "
        "{params.rw} --out {output} > {log} 2>&1"


if BAPPS["enabled"]:

    rule table_bapps:
        input:
            expand(f"{R}/bapps/{{metric}}.parquet", metric=BAPPS_METRICS),
        output:
            report_outputs("tables", "bapps"),
        params:
            inputs=" ".join(f"{m}={R}/bapps/{m}.parquet" for m in BAPPS_METRICS),
            eps=" ".join(fmt(e) for e in config["certify"]["eps_255"]),
            scoring=config["certify"]["scoring"],
            half_votes=config["certify"]["half_votes"],
            prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        conda:
            "../../envs/lipsim.yaml"
        log:
            f"{R}/logs/table_bapps.log",
        shell:
            "python -m lipsim table-bapps --inputs {params.inputs} --eps {params.eps} "
            "--scoring {params.scoring} --half-votes {params.half_votes} "
            "--out-prefix {params.prefix} > {log} 2>&1"
