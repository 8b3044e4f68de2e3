// The resources loraplane's azure target manages, for teams who provision by hand (or with the
// AI Toolkit's "Provision Azure Container Apps for inference"): a storage account and file share
// for the model and adapters, a Log Analytics workspace, a Container Apps environment with a GPU
// workload profile, the share mounted into it, and the inference app on port 7860.
// Parameter names follow the AI Toolkit's inference.parameters.json; existing resources may be
// named, and are updated in place. Outputs are what infra/inference.config.json holds.

param location string = resourceGroup().location
@description('The commands that start the inference app, joined with "; " and run by /bin/bash -c.')
param defaultCommands array
@description('The most GPU replicas the app scales out to.')
param maximumInstanceCount int = 1
@description('The fewest replicas; 0 lets the app scale to zero (and start cold).')
param minimumInstanceCount int = 1

param resourceSuffix string = substring(uniqueString(resourceGroup().id), 0, 5)
param storageAccountName string = 'lpstorage${resourceSuffix}'
param fileShareName string = 'lpfileshare${resourceSuffix}'
param acaEnvironmentName string = 'lpenv${resourceSuffix}'
param acaEnvironmentStorageName string = 'lpenvstorage${resourceSuffix}'
param acaAppName string = 'lpinference${resourceSuffix}'
param acaLogAnalyticsName string = 'lplog${resourceSuffix}'

@description('The workload profile the app runs on, and its type (a GPU type).')
param workloadProfileName string = 'gpu'
param workloadProfileType string = 'Consumption-GPU-NC24-A100'
@description('A public PyTorch CUDA runtime image, as the AI Toolkit uses; or a prebuilt serving image (serving/Dockerfile).')
param image string = 'docker.io/pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime'
@description('Paths relative to the share root, in the AI Toolkit layout.')
param modelPath string = 'model-cache/microsoft/Phi-3-mini-4k-instruct'
param adapterPath string = 'models/qlora/qlora/gpu_model/adapter'
@secure()
@description('The bearer token that guards the app\'s reload endpoint.')
param adminToken string = newGuid()

var defaultCommand = join(defaultCommands, '; ')
var tags = { 'managed-by': 'loraplane-bicep' }
var consumptionGpu = startsWith(workloadProfileType, 'Consumption')

resource storageAccount 'Microsoft.Storage/storageAccounts@2023-01-01' = {
  name: storageAccountName
  location: location
  tags: tags
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: { largeFileSharesState: 'Enabled' }
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
  properties: {
    managedEnvironmentId: environment.id
    workloadProfileName: workloadProfileName
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: { external: true, targetPort: 7860, transport: 'auto' }
      secrets: [ { name: 'loraplane-admin-token', value: adminToken } ]
    }
    template: {
      containers: [
        {
          name: 'serving'
          image: image
          command: [ '/bin/bash', '-c', defaultCommand ]
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
            // A GPU replica pulls a large image and loads a model: up to 30 minutes to start.
            { type: 'Startup', httpGet: { path: '/healthz', port: 7860 }, initialDelaySeconds: 10, periodSeconds: 10, failureThreshold: 180, timeoutSeconds: 5 }
            { type: 'Readiness', httpGet: { path: '/readyz', port: 7860 }, periodSeconds: 10, failureThreshold: 3, timeoutSeconds: 5 }
            { type: 'Liveness', httpGet: { path: '/healthz', port: 7860 }, periodSeconds: 30, failureThreshold: 5, timeoutSeconds: 5 }
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
