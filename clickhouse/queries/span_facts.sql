-- Facts about one span, shared by every stats query (included where {span_facts} stands).
-- They are MATERIALIZED columns (schema.sql), computed once on insert; only the price of a
-- call that reports no cost of its own is worked out here, since the price table is the
-- reader's (a query parameter).
WITH
    IsLlmCall AS f_is_llm,
    IsAgentRun AS f_is_run,
    StatusCode = 'Error' AS f_is_error,
    InputTokens AS f_input_tokens,
    OutputTokens AS f_output_tokens,
    LlmModel AS f_model,
    SpanCostUsd AS f_span_cost,
    ifNull(f_span_cost,
        (f_input_tokens * transform(f_model, {price_models:Array(String)}, {price_input:Array(Float64)}, 0.)
         + f_output_tokens * transform(f_model, {price_models:Array(String)}, {price_output:Array(Float64)}, 0.)) / 1e6
    ) AS f_cost
