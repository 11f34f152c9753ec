// An empty translation unit for stages that have no sources yet.
