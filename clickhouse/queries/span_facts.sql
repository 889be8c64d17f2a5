-- Facts about one span, shared by every stats query (included where {span_facts} stands).
-- An LLM call: GenAI chat/completion/embedding operations, OpenInference LLM/EMBEDDING
-- spans, OpenLLMetry llm.request.type. LiteLLM's raw_gen_ai_request child repeats its
-- parent's call and is not counted again; agent and chain spans that repeat totals are
-- not LLM calls, so a run's totals count each call once.
WITH
    (SpanAttributes['gen_ai.operation.name'] IN ('chat', 'text_completion', 'generate_content', 'embeddings')
        OR SpanAttributes['openinference.span.kind'] IN ('LLM', 'EMBEDDING')
        OR SpanAttributes['llm.request.type'] IN ('chat', 'completion', 'embedding'))
        AND SpanName != 'raw_gen_ai_request' AS f_is_llm,
    SpanAttributes['metadata.agent_root'] = 'true' AND NOT f_is_llm AS f_is_run,
    StatusCode = 'Error' AS f_is_error,
    toUInt64OrZero(multiIf(
        SpanAttributes['gen_ai.usage.input_tokens'] != '', SpanAttributes['gen_ai.usage.input_tokens'],
        SpanAttributes['gen_ai.usage.prompt_tokens'] != '', SpanAttributes['gen_ai.usage.prompt_tokens'],
        SpanAttributes['llm.token_count.prompt'])) AS f_input_tokens,
    toUInt64OrZero(multiIf(
        SpanAttributes['gen_ai.usage.output_tokens'] != '', SpanAttributes['gen_ai.usage.output_tokens'],
        SpanAttributes['gen_ai.usage.completion_tokens'] != '', SpanAttributes['gen_ai.usage.completion_tokens'],
        SpanAttributes['llm.token_count.completion'])) AS f_output_tokens,
    multiIf(
        SpanAttributes['gen_ai.response.model'] != '', SpanAttributes['gen_ai.response.model'],
        SpanAttributes['gen_ai.request.model'] != '', SpanAttributes['gen_ai.request.model'],
        SpanAttributes['llm.model_name']) AS f_model,
    toFloat64OrNull(multiIf(
        SpanAttributes['gen_ai.cost.total_cost'] != '', SpanAttributes['gen_ai.cost.total_cost'],
        SpanAttributes['llm.cost.total'] != '', SpanAttributes['llm.cost.total'],
        SpanAttributes['litellm.cost.total'] != '', SpanAttributes['litellm.cost.total'],
        SpanAttributes['gen_ai.usage.cost'])) AS f_span_cost,
    ifNull(f_span_cost,
        (f_input_tokens * transform(f_model, {price_models:Array(String)}, {price_input:Array(Float64)}, 0.)
         + f_output_tokens * transform(f_model, {price_models:Array(String)}, {price_output:Array(Float64)}, 0.)) / 1e6
    ) AS f_cost
