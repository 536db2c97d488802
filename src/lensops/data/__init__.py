"""The data stage: read -> inspect -> validate -> split -> write (:mod:`lensops.data.catalog`),
then Ray Data pipelines that feed training (:mod:`lensops.data.loading`).
"""
