-- Argo CD health check for orgkeeper.dev kinds (Organization, Membership, License).
-- It reads the same kstatus-style conditions Flux reads: Ready, with observedGeneration.
local hs = {}
local status = obj.status
if status == nil or status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for orgkeeper to reconcile"
  return hs
end
local generation = obj.metadata.generation
local ready = nil
for _, condition in ipairs(status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready == nil or (generation ~= nil and ready.observedGeneration ~= nil and ready.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for orgkeeper to observe the latest spec"
  return hs
end
local deactivated = status.phase == "Deactivated" or status.state == "Removed"
if ready.status == "True" and deactivated then
  hs.status = "Suspended"
elseif ready.status == "True" then
  hs.status = "Healthy"
elseif ready.reason == "Provisioning" or ready.reason == "Deactivating" then
  hs.status = "Progressing"
else
  hs.status = "Degraded"
end
hs.message = ready.message
return hs
