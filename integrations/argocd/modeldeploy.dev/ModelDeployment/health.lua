-- Argo CD health of a modeldeploy.dev ModelDeployment, read from the status its operator
-- writes (docs/gitops.md). Written for the sandbox Argo CD gives argocd-cm scripts: only
-- the base, table, package and a safe os library, so no string.* functions.

local function condition(status, type)
  if status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function text(value, fallback)
  if value == nil or value == "" then
    return fallback
  end
  return tostring(value)
end

-- "weight 20% (actual 17%)": the share the operator set and the share the router achieved,
-- for a canary or an experiment's arm.
local function weights(canary)
  local words = "weight " .. text(canary.weight, "0") .. "%"
  if canary.actualWeight ~= nil then
    words = words .. " (actual " .. tostring(canary.actualWeight) .. "%)"
  end
  return words
end

-- "deeper 2.2.0 weight 20% (actual 21%)", or "fresh 2.2.1 cut (why)": one arm of an
-- experiment (status.experiment.control or .variants).
local function arm_words(arm)
  local words = text(arm.name, "?") .. " " .. text(arm.version, "?") .. " "
  if arm.state == "Cut" then
    return words .. "cut (" .. text(arm.reason, "failed its SLO checks") .. ")"
  end
  return words .. weights(arm)
end

-- The running experiment: each arm's share of traffic, then where it stands.
local function experiment_words(experiment)
  local arms = {}
  if experiment.control ~= nil then
    table.insert(arms, arm_words(experiment.control))
  end
  for _, arm in ipairs(experiment.variants or {}) do
    table.insert(arms, arm_words(arm))
  end
  local words = "experiment " .. text(experiment.phase, "Running") .. " (attempt "
    .. text(experiment.attempt, "1") .. "): " .. table.concat(arms, ", ")
  if experiment.message ~= nil and experiment.message ~= "" then
    words = words .. "; " .. tostring(experiment.message)
  end
  return words
end

-- The verdict of the spec's finished experiment, nil when there is none to tell: with
-- GitOps the winner is rolled out by changing the manifest in Git as winnerPatch says.
local function experiment_result(obj, status)
  local experiment = status.experiment
  local strategy = obj.spec and obj.spec.strategy
  if experiment == nil or experiment.phase == "Running" or strategy == nil or strategy.type ~= "experiment" then
    return nil
  end
  local words = "experiment " .. text(experiment.phase, "?") .. ": " .. text(experiment.message, "no message")
  if experiment.winner ~= nil then
    words = words .. " (under Argo CD: make winnerPatch's change in Git; self-heal would revert a live patch)"
  end
  return words
end

local function canary_position(obj, canary)
  if canary.stage == "Shadow" then
    -- A shadow gets mirrored copies only: no step, no weight.
    local shadow = obj.spec and obj.spec.strategy and obj.spec.strategy.shadow
    local needed = text(shadow and shadow.analyses, "3")
    return "shadow " .. text(canary.version, "?") .. ", " .. text(canary.shadowPasses, "0")
      .. "/" .. needed .. " analyses of mirrored traffic passed, no live traffic"
  end
  local step = text((canary.step or 0) + 1, "1")
  local steps = obj.spec and obj.spec.rollout and obj.spec.rollout.steps
  if steps ~= nil then
    step = step .. "/" .. tostring(#steps)
  end
  return "canary " .. text(canary.version, "?") .. " at step " .. step .. ", " .. weights(canary)
end

-- What holds the canary: the spec, a modeldeploy.dev/pause request, or both; nil when
-- nothing does. The operator's Paused reason covers a pause these fields do not name.
-- The history entry of a rolled-back revision: it keeps the reason, which the status
-- message no longer names once the operator settles on the stable.
local function rollback_of(status, revision)
  if status.history == nil or revision == nil then
    return nil
  end
  for _, entry in ipairs(status.history) do
    if entry.revision == revision and entry.outcome == "RolledBack" then
      return entry
    end
  end
  return nil
end

local function paused_by(obj, status)
  local by_spec = obj.spec and obj.spec.rollout and obj.spec.rollout.paused == true
  local by_request = status.pausedByRequest == true
  if by_spec and by_request then
    return "spec.rollout.paused and modeldeploy.dev/pause"
  elseif by_spec then
    return "spec.rollout.paused"
  elseif by_request then
    return "modeldeploy.dev/pause"
  end
  local ready = condition(status, "Ready")
  local reconciling = condition(status, "Reconciling")
  if (ready ~= nil and ready.reason == "Paused") or (reconciling ~= nil and reconciling.reason == "Paused") then
    return "the operator"
  end
  return nil
end

-- While the step waits for quality labels (status.lastAnalysis.awaitingFeedback): since
-- when, and until when it is not counted as inconclusive. Without a string library the
-- script cannot add feedbackDeadline to the time, so it names both.
local function feedback_wait(obj, status, canary)
  local analysis = status.lastAnalysis
  if analysis == nil or analysis.awaitingFeedback ~= true or analysis.revision ~= canary.revision then
    return nil
  end
  local words = "waiting for quality labels"
  if canary.awaitingFeedbackSince ~= nil then
    local quality = obj.spec and obj.spec.analysis and obj.spec.analysis.quality
    words = words .. " since " .. tostring(canary.awaitingFeedbackSince)
      .. ", not counted as inconclusive until " .. text(quality and quality.feedbackDeadline, "1h")
      .. " later (feedbackDeadline)"
  end
  -- past the deadline the waits count: the tally says so
  if tonumber(canary.inconclusiveChecks or 0) > 0 then
    local limit = obj.spec and obj.spec.rollout and obj.spec.rollout.inconclusiveLimit
    words = words .. "; inconclusive " .. tostring(canary.inconclusiveChecks)
    if limit ~= nil then
      words = words .. "/" .. tostring(limit)
    end
  end
  return words
end

-- What spec.monitoring found crossed on the stable (status.drift and status.slo with
-- breachedSince), nil when nothing is. Said, not judged: nothing is being rolled out.
local function monitoring_crossings(status)
  local found = {}
  local drift = status.drift
  if drift ~= nil and drift.breachedSince ~= nil then
    if drift.verdict == "Fail" then
      table.insert(found, text(drift.message, "a bound crossed") .. " (crossed since "
        .. tostring(drift.breachedSince) .. ")")
    else
      -- a later pass could not judge (too few rows or labels, a failed query): the
      -- crossing stands until a pass clears it
      table.insert(found, "a bound crossed since " .. tostring(drift.breachedSince)
        .. ", last pass " .. text(drift.verdict, "?") .. ": " .. text(drift.message, "no message"))
    end
  end
  local slo = status.slo
  if slo ~= nil and slo.breachedSince ~= nil then
    table.insert(found, "error budget spent since " .. tostring(slo.breachedSince) .. ": "
      .. text(slo.message, "no message"))
  end
  if #found == 0 then
    return nil
  end
  return "monitoring: " .. table.concat(found, "; ")
end

local function health(obj)
  local status = obj.status
  if status == nil or status.phase == nil then
    return "Progressing", "waiting for the operator to report status"
  end
  local generation = obj.metadata and obj.metadata.generation
  if generation ~= nil and status.observedGeneration ~= generation then
    return "Progressing", "waiting for the operator to act on generation " .. tostring(generation)
      .. " (observed " .. text(status.observedGeneration, "none") .. ")"
  end

  local phase = status.phase
  local message = text(status.message, phase)
  if phase == "Available" then
    local result = experiment_result(obj, status)
    if result ~= nil then
      message = message .. "; " .. result
    end
    local crossings = monitoring_crossings(status)
    if crossings ~= nil then
      message = message .. "; " .. crossings
    end
    local ready = condition(status, "Ready")
    if ready ~= nil and ready.status == "True" then
      return "Healthy", message
    end
    -- the stable serves this generation but not yet with every pod
    return "Progressing", message
  elseif phase == "Pending" then
    return "Progressing", message
  elseif phase == "Progressing" then
    if status.canary == nil then
      return "Progressing", message
    end
    local where = canary_position(obj, status.canary)
    local by = paused_by(obj, status)
    if by ~= nil then
      return "Suspended", "paused by " .. by .. ": " .. where
    end
    local waiting = feedback_wait(obj, status, status.canary)
    if waiting ~= nil then
      return "Progressing", where .. "; " .. waiting
    end
    return "Progressing", where
  elseif phase == "Promoting" then
    if status.canary == nil then
      return "Progressing", message
    end
    return "Progressing", message .. "; canary " .. weights(status.canary)
  elseif phase == "Experimenting" then
    -- control and the variants share live traffic until the verdict; the spec's model
    -- serves, so this is in progress, not a failure
    if status.experiment == nil then
      return "Progressing", message
    end
    local words = experiment_words(status.experiment)
    local by = paused_by(obj, status)
    if by ~= nil then
      -- a paused experiment runs no analysis and reaches no verdict until resumed
      return "Suspended", "paused by " .. by .. ": " .. words
    end
    return "Progressing", words
  elseif phase == "RolledBack" then
    local entry = rollback_of(status, status.rejectedRevision or status.revision)
    if entry == nil then
      return "Degraded", message
    end
    local stable = status.stable and status.stable.version
    return "Degraded", "canary " .. text(entry.version, "?") .. " rolled back: " .. text(entry.reason, "?")
      .. "; stable " .. text(stable, "?") .. " serves (change the model or annotate modeldeploy.dev/retry to try again)"
  elseif phase == "Failed" then
    local stalled = condition(status, "Stalled")
    return "Degraded", text(stalled and stalled.reason, "Failed") .. ": " .. message
  end
  return "Unknown", "unknown phase " .. tostring(phase)
end

local hs = {}
hs.status, hs.message = health(obj)
return hs
