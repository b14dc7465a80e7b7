"""The web dashboard (``dbdict serve``), the shareable report (``dbdict report``) and the
data they show (:mod:`.data`, also behind ``dbdict status --watch``)."""
