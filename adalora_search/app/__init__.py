"""The application layer: the verbs' orchestration (``session``), the summary ``validate`` prints
(``describe``) and the warnings the verbs silence (``quiet``). ``adalora_search.api`` and the command
line are built on it; nothing below it imports it.
"""
