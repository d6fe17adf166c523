"""The services the daemon calls over the network, one client each: effectful, below `actors/`.

* ``llm``                  the call to mana-llm (chat completions, tool-calling rounds): bounded,
                           limited, retried; its errors are ``errors.LlmError``
* ``h11_transport``        the lean HTTP/1.1 transport under the LLM call (the daemon's hot path)
* ``circuit``              the LLM's circuit breaker: an outage parks missions instead of failing
                           them; one probe request at a time until the LLM answers again
* ``research_client``      the web-research pre-step's calls to mana-api (failures are values)
* ``deep_research_client`` mana-research's async research jobs: submit and poll (failures are values)
* ``errors``               the LLM client's exceptions
* ``_http``                bounded reads of httpx response bodies, shared by the research clients

What to ask and what to make of an answer stays pure in ``planner/``; these modules import it,
and ``observability/``, never ``store/``, ``actors/`` or ``http_api/``.
"""
