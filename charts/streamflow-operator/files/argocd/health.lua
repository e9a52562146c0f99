-- Argo CD health check for streamflow.io PipelineRun, Backfill and Pipeline: the value of
-- resource.customizations.health.streamflow.io_PipelineRun (and _Backfill, _Pipeline) in
-- argocd-cm (docs/operations.md). Argo CD runs it in gopher-lua (Lua 5.1) with the object as
-- `obj`. It reads the conditions the operator sets for GitOps tools (docs/operator.md):
-- Stalled=True is Degraded (a failed run, a Backfill done with failed runs, an invalid spec),
-- Reconciling=True is Progressing (a run pending or running, a Backfill with intervals left),
-- Ready=True is Healthy (a run succeeded, a Backfill done, a Pipeline scheduling), and a
-- suspended Backfill or Pipeline is Suspended.
local hs = { status = "Progressing", message = "waiting for the streamflow operator" }
if obj.status == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.message = "waiting for the operator to observe generation " .. tostring(generation)
  return hs
end
local conditions = {}
if obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    conditions[c.type] = c
  end
end
local function is_true(type_)
  return conditions[type_] ~= nil and conditions[type_].status == "True"
end
local function say(status, type_)
  hs.status = status
  local c = conditions[type_]
  if c ~= nil then
    hs.message = c.reason
    if c.message ~= nil and c.message ~= "" then
      hs.message = c.reason .. ": " .. c.message
    end
  end
  return hs
end
if is_true("Stalled") then
  return say("Degraded", "Stalled")
end
if is_true("Reconciling") then
  return say("Progressing", "Reconciling")
end
-- Before Ready: a suspended object is Ready (reason Suspended), as its spec asks.
if is_true("Suspended") or (conditions["Ready"] ~= nil and conditions["Ready"].reason == "Suspended") then
  return say("Suspended", "Ready")
end
if is_true("Ready") then
  return say("Healthy", "Ready")
end
-- Conditions from an operator older than these (no Ready/Reconciling/Stalled yet): Argo CD
-- re-evaluates once the operator has written them.
return hs
