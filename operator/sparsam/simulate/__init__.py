"""Trace-driven cost simulator: replays a workload trace through the SAME capacity planner the
operator runs (`sparsam.decisions.capacity`), with a simulated clock.

    traces    load the Philly jobs and the AWS Spot Advisor
    spot      prices, band -> hazard, Young/Daly checkpoint interval
    policies  static, reactive and sparsam as node pools; jobs as worker pods
    engine    the event loop around plan_capacity / apply_plan
    report    metrics, markdown table, JSON, plot
    compare   one `sparsam simulate` run: all three policies side by side
"""
