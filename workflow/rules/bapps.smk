# BAPPS 2AFC (validation): data (generated or downloaded), layout check, every metric scored
# per category (LipSim models also certified), the BAPPS table.

if BAPPS["enabled"] and BAPPS["source"] == "generate":

    rule make_demo_bapps:
        output:
            directory(f"{R}/data/bapps"),
        log:
            f"{R}/logs/make_demo_bapps.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("make-demo-bapps"),
        shell:
            "python -m lipsim make-demo-bapps {params.opts} --out {output} > {log} 2>&1"

elif BAPPS["enabled"] and BAPPS["source"] == "download":

    # A localrule: it needs the network, which login nodes have and compute nodes may not.
    localrules:
        download_bapps,

    rule download_bapps:
        output:
            directory(f"{R}/data/bapps"),
        log:
            f"{R}/logs/download_bapps.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("download-bapps"),
        shell:
            "python -m lipsim download-bapps {params.opts} --out {output} --no-progress "
            "> {log} 2>&1"


rule check_bapps:
    input:
        generated(bapps_dir()),
    output:
        f"{R}/checks/bapps.json",
    log:
        f"{R}/logs/check_bapps.log",
    conda:
        "../../envs/lipsim.yaml"
    params:
        opts=options("check-bapps"),
        root=lambda wc, input: input[0] if input else bapps_dir(),
    shell:
        "python -m lipsim check-bapps {params.opts} --root {params.root} --report {output} "
        "> {log} 2>&1"


rule evaluate_bapps:
    input:
        data=generated(bapps_dir()),
        check=f"{R}/checks/bapps.json",
        deps=metric_inputs,
    output:
        f"{R}/bapps/{{metric}}.parquet",
    log:
        f"{R}/logs/evaluate_bapps/{{metric}}.log",
    conda:
        "../../envs/lipsim.yaml"
    resources:
        **slurm_resources(config["resources"]["eval"]),
    params:
        opts=options("evaluate-bapps"),
        root=lambda wc, input: input.data[0] if input.data else bapps_dir(),
        weights=lambda wc: config["weights_dir"],
        spec=lambda wc: metric_spec(wc.metric),
        rw=lambda wc: random_weights_flag(wc.metric),
        # The LipSim authors load BAPPS at 224 (the paper's image_size); LipSim models
        # always take their own input size (the certificate holds there).
        size=config["image_size"],
    shell:
        "python -m lipsim evaluate-bapps {params.opts} --metric {params.spec} "
        "--bapps {params.root} --weights-dir {params.weights} --image-size {params.size} "
        "{params.rw} --out {output} > {log} 2>&1"


if BAPPS["enabled"]:

    rule table_bapps:
        input:
            expand(f"{R}/bapps/{{metric}}.parquet", metric=BAPPS_METRICS),
        output:
            report_outputs("tables", "bapps"),
        log:
            f"{R}/logs/table_bapps.log",
        conda:
            "../../envs/lipsim.yaml"
        params:
            opts=options("table-bapps"),
            inputs=" ".join(f"{m}={R}/bapps/{m}.parquet" for m in BAPPS_METRICS),
            prefix=lambda wc, output: output[0].rsplit(".", 1)[0],
        shell:
            "python -m lipsim table-bapps {params.opts} --inputs {params.inputs} "
            "--out-prefix {params.prefix} > {log} 2>&1"
