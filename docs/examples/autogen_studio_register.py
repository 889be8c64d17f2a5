"""Register the agents of AutoGen Studio's teams in agentmon, before they ever run.

Run: python docs/examples/autogen_studio_register.py
     (AUTOGEN_STUDIO_URL, AUTOGEN_STUDIO_USER_ID, AUTOGEN_STUDIO_TOKEN, AGENTMON_URL, AGENTMON_API_KEY)
"""

from integrations.autogen_studio import register_autogen_studio_teams

for agent in register_autogen_studio_teams():
    print(f"{agent.id}  {agent.name}  ({agent.type})")
