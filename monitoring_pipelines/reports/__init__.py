"""Weekly and monthly reports: plain Python, no Dagster import.

``periods`` says which week or month a report covers, ``sections/`` builds each section's figures
from the warehouse (and the MLflow registry through ``registry``), ``build`` assembles them with
the previous period's, ``render`` writes the HTML, JSON and Markdown, and ``service`` is the one
function the assets, the CLI and the demo call.
"""
