// The resources loraplane's azure target manages, for teams who provision by hand (or with the
// AI Toolkit's "Provision Azure Container Apps for inference"): a storage account and file share
// for the model and adapters, a Log Analytics workspace, a Container Apps environment with a GPU
// workload profile, the share mounted into it, and the inference app on port 7860.
// Parameter names follow the AI Toolkit's inference.parameters.json; existing resources may be
// named, and are updated in place. Outputs are what infra/inference.config.json holds.
// Every value below is one Azure accepts (see the README's Azure rules): probe bounds from the
// Microsoft.App REST specification, sizes from workload-profiles-overview and containers#allocations.

param location string = resourceGroup().location
@description('The commands that start the inference app, joined with "; " and run by /bin/bash -c. Empty: install exactly servingWheel from the share and serve (the default image), or run the prebuilt image as it is.')
param defaultCommands array = []
@description('The most GPU replicas the app scales out to (1 to 300).')
@minValue(1)
@maxValue(300)
param maximumInstanceCount int = 1
@description('The fewest replicas; 0 lets the app scale to zero (and start cold).')
@minValue(0)
@maxValue(300)
param minimumInstanceCount int = 1

param resourceSuffix string = substring(uniqueString(resourceGroup().id), 0, 5)
param storageAccountName string = 'lpstorage${resourceSuffix}'
param fileShareName string = 'lpfileshare${resourceSuffix}'
param acaEnvironmentName string = 'lpenv${resourceSuffix}'
param acaEnvironmentStorageName string = 'lpenvstorage${resourceSuffix}'
param acaAppName string = 'lpinference${resourceSuffix}'
param acaLogAnalyticsName string = 'lplog${resourceSuffix}'

@description('The workload profile the app runs on, and its type (a GPU type). Serverless GPU types take no node counts; a dedicated GPU profile can only be added when the environment is created.')
@maxLength(15)
param workloadProfileName string = 'gpu-nc24-a100'
param workloadProfileType string = 'Consumption-GPU-NC24-A100'
@description('The serving container\'s size: the whole of one instance of the profile (24 vCPU and 220Gi on the A100 types; 8 and 56Gi on Consumption-GPU-NC8as-T4).')
param cpu string = '24'
param memory string = '220Gi'
@description('A public PyTorch CUDA runtime image, as the AI Toolkit uses; or a prebuilt serving image (serving/Dockerfile) in registryServer.')
param image string = 'docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime'
@description('The exact serving wheel in .loraplane/dist on the share, as "loraplane dev serving-wheel" names it (the default image installs it at start).')
param servingWheel string = ''
@description('An Azure Container Registry the image is pulled from with a managed identity: its login server, or empty for a public image.')
param registryServer string = ''
@description('"system" (the app\'s own identity, made with the app: grant it AcrPull, then restart the revision) or a user-assigned identity\'s resource ID with AcrPull.')
param registryIdentity string = 'system'
@description('Paths relative to the share root, in the AI Toolkit layout.')
param modelPath string = 'model-cache/microsoft/Phi-3-mini-4k-instruct'
param adapterPath string = 'models/qlora/qlora/gpu_model/adapter'
@secure()
@description('The bearer token that guards the app\'s reload endpoint.')
param adminToken string = newGuid()

var installCommands = empty(servingWheel) ? [] : [
  'pip install --no-cache-dir /mount/.loraplane/dist/${servingWheel}'
  'exec python -m serving'
]
var commands = empty(defaultCommands) ? installCommands : defaultCommands
var tags = { 'managed-by': 'loraplane-bicep' }
var consumptionGpu = startsWith(workloadProfileType, 'Consumption')
var systemIdentity = registryIdentity == 'system'

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  name: storageAccountName
  location: location
  tags: tags
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  // Container Apps mounts Azure Files with the account key, and loraplane reads the share with it.
  properties: { largeFileSharesState: 'Enabled', allowSharedKeyAccess: true }
}

resource fileService 'Microsoft.Storage/storageAccounts/fileServices@2023-01-01' = {
  parent: storageAccount
  name: 'default'
}

resource fileShare 'Microsoft.Storage/storageAccounts/fileServices/shares@2023-01-01' = {
  parent: fileService
  name: fileShareName
  properties: { shareQuota: 1024 }
}

resource logAnalytics 'Microsoft.OperationalInsights/workspaces@2022-10-01' = {
  name: acaLogAnalyticsName
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource environment 'Microsoft.App/managedEnvironments@2024-03-01' = {
  name: acaEnvironmentName
  location: location
  tags: tags
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logAnalytics.properties.customerId
        sharedKey: logAnalytics.listKeys().primarySharedKey
      }
    }
    workloadProfiles: concat([
      { name: 'Consumption', workloadProfileType: 'Consumption' }
    ], workloadProfileType == 'Consumption' ? [] : [
      consumptionGpu ? { name: workloadProfileName, workloadProfileType: workloadProfileType }
        : { name: workloadProfileName, workloadProfileType: workloadProfileType, minimumCount: 0, maximumCount: max(1, maximumInstanceCount) }
    ])
  }
}

resource environmentStorage 'Microsoft.App/managedEnvironments/storages@2024-03-01' = {
  parent: environment
  name: acaEnvironmentStorageName
  properties: {
    azureFile: {
      accountName: storageAccount.name
      accountKey: storageAccount.listKeys().keys[0].value
      shareName: fileShare.name
      accessMode: 'ReadWrite'
    }
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: acaAppName
  location: location
  tags: tags
  identity: empty(registryServer) ? null : (systemIdentity ? { type: 'SystemAssigned' } : { type: 'UserAssigned', userAssignedIdentities: { '${registryIdentity}': {} } })
  properties: {
    managedEnvironmentId: environment.id
    workloadProfileName: workloadProfileType == 'Consumption' ? 'Consumption' : workloadProfileName
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: { external: true, targetPort: 7860, transport: 'auto' }
      secrets: [ { name: 'loraplane-admin-token', value: adminToken } ]
      registries: empty(registryServer) ? [] : [ { server: registryServer, identity: registryIdentity } ]
    }
    template: {
      containers: [
        {
          name: 'serving'
          image: image
          command: empty(commands) ? null : [ '/bin/bash', '-c', join(commands, '; ') ]
          resources: { cpu: json(cpu), memory: memory }
          env: [
            { name: 'LORAPLANE_SHARE_ROOT', value: '/mount' }
            { name: 'LORAPLANE_MODEL_PATH', value: modelPath }
            { name: 'LORAPLANE_ADAPTER_PATH', value: adapterPath }
            { name: 'LORAPLANE_ADAPTER_POINTER', value: '.loraplane/${acaAppName}/current.json' }
            { name: 'LORAPLANE_HOST', value: '0.0.0.0' }
            { name: 'LORAPLANE_PORT', value: '7860' }
            { name: 'LORAPLANE_DEPLOYMENT', value: acaAppName }
            { name: 'HF_HUB_OFFLINE', value: '1' }
            { name: 'LORAPLANE_ADMIN_TOKEN', secretRef: 'loraplane-admin-token' }
          ]
          volumeMounts: [ { volumeName: 'share', mountPath: '/mount' } ]
          probes: [
            // /healthz answers once the HTTP server is up (install and imports: up to 10 minutes);
            // the model then loads under the readiness probe, which takes it out of traffic
            // without restarting it.
            { type: 'Startup', httpGet: { path: '/healthz', port: 7860 }, initialDelaySeconds: 10, periodSeconds: 60, failureThreshold: 10, timeoutSeconds: 5 }
            { type: 'Readiness', httpGet: { path: '/readyz', port: 7860 }, initialDelaySeconds: 5, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 5 }
            { type: 'Liveness', httpGet: { path: '/healthz', port: 7860 }, initialDelaySeconds: 10, periodSeconds: 30, failureThreshold: 5, timeoutSeconds: 5 }
          ]
        }
      ]
      scale: { minReplicas: minimumInstanceCount, maxReplicas: maximumInstanceCount }
      volumes: [ { name: 'share', storageType: 'AzureFile', storageName: environmentStorage.name } ]
    }
  }
}

output SUBSCRIPTION_ID string = subscription().subscriptionId
output RESOURCE_GROUP_NAME string = resourceGroup().name
output STORAGE_ACCOUNT_NAME string = storageAccount.name
output FILE_SHARE_NAME string = fileShare.name
output ACA_APP_NAME string = app.name
output ACA_APP_ENDPOINT string = 'https://${app.properties.configuration.ingress.fqdn}'
